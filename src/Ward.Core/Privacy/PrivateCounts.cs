using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Ward.Core.Crypto;
using Ward.Core.Storage;

namespace Ward.Core.Privacy;

/// <summary>
/// The discrete Laplace (two-sided geometric) mechanism: noise k with P(k) = (1 − α)/(1 + α) · α^|k|, α = exp(−ε/Δ),
/// which makes a count of sensitivity Δ ε-differentially private (Ghosh, Roughgarden and Sundararajan). Drawn as the
/// difference of two geometric variables from the operating system's cryptographic random source, never from a seeded
/// generator that an analyst could predict or replay.
/// </summary>
internal static class DiscreteLaplace
{
    public static long Noise(double epsilon, int sensitivity)
    {
        if (!(epsilon > 0) || double.IsInfinity(epsilon) || sensitivity < 1)
        {
            throw new PrivacyException("The privacy loss ε must be a positive number and the sensitivity at least 1.");
        }
        var logAlpha = -epsilon / sensitivity;
        return Geometric(logAlpha) - Geometric(logAlpha);
    }

    /// <summary>Failures before the first success of probability 1 − α: P(g) = (1 − α) α^g, by inversion of a uniform in (0, 1].</summary>
    private static long Geometric(double logAlpha)
    {
        Span<byte> bytes = stackalloc byte[8];
        RandomNumberGenerator.Fill(bytes);
        // 53 random bits: a uniform on the grid (0, 1] (never 0, whose logarithm is infinite).
        var u = ((BitConverter.ToUInt64(bytes) >> 11) + 1) * (1.0 / (1UL << 53));
        var g = Math.Floor(Math.Log(u) / logAlpha);
        return g >= long.MaxValue / 4 ? long.MaxValue / 4 : (long)g;
    }
}

/// <summary>
/// A question for aggregate research: how many patients, optionally those with a resource of <see cref="Type"/> (among
/// <see cref="Codes"/> when given), by age band, gender and code. The cells are fixed in advance (age bands, genders,
/// the codes asked), never taken from the data, so that which cells exist reveals nothing.
/// </summary>
internal sealed record CountQuery(string? Type, IReadOnlyList<string> By, IReadOnlyList<string> Codes, double Epsilon)
{
    public static readonly string[] Dimensions = ["age-band", "gender", "code"];
    public static readonly string[] AgeBands = ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+", ResearchData.Unknown];
    public static readonly string[] Genders = ["female", "male", "other", ResearchData.Unknown];

    /// <summary>FHIR types that can be counted, and their research table.</summary>
    public static readonly Dictionary<string, string> Tables = new(StringComparer.Ordinal)
    {
        ["Condition"] = "conditions", ["Observation"] = "observations", ["Encounter"] = "encounters",
        ["MedicationRequest"] = "medications", ["Procedure"] = "procedures", ["Immunization"] = "immunizations",
    };

    public const int MaxCodes = 100;

    /// <summary>How much one patient can change the answer: one cell, or one per code asked when the codes are a dimension.</summary>
    public int Sensitivity => By.Contains("code") ? Codes.Count : 1;

    public void Validate()
    {
        if (Type is not null && Type != "Patient" && !Tables.ContainsKey(Type))
        {
            throw new PrivacyException($"'{Type}' cannot be counted: count Patient, or patients with a {string.Join(", ", Tables.Keys)}.");
        }
        if (By.Distinct().Count() != By.Count || By.Any(b => !Dimensions.Contains(b)))
        {
            throw new PrivacyException($"The dimensions are {string.Join(", ", Dimensions)}, each at most once.");
        }
        if ((By.Contains("code") || Codes.Count > 0) && (Type is null or "Patient"))
        {
            throw new PrivacyException("Codes need a resource type to look them up in (for example Condition).");
        }
        if (By.Contains("code") && Codes.Count == 0)
        {
            throw new PrivacyException("Counting by code needs the list of codes (the cells are fixed in advance, never taken from the data).");
        }
        if (Codes.Count > MaxCodes || Codes.Distinct(StringComparer.Ordinal).Count() != Codes.Count)
        {
            throw new PrivacyException($"At most {MaxCodes} distinct codes per question.");
        }
        if (!(Epsilon > 0) || Epsilon > 10)
        {
            throw new PrivacyException("ε must be greater than 0 and at most 10.");
        }
    }

    /// <summary>A canonical text of the question, for the ledger and the audit log.</summary>
    public string Describe() =>
        $"count {(Type ?? "Patient")}{(Codes.Count > 0 ? " codes " + string.Join(",", Codes) : "")}{(By.Count > 0 ? " by " + string.Join(",", By) : "")} epsilon {Epsilon.ToString("R", CultureInfo.InvariantCulture)}";
}

/// <summary>The noisy answer: one cell per combination of the dimensions' values, with the privacy accounting.</summary>
internal sealed record CountAnswer(IReadOnlyList<string> By, List<(string[] Key, long Count)> Cells, double Epsilon, int Sensitivity, double Spent, double Budget)
{
    public void Write(Utf8JsonWriter json)
    {
        json.WriteStartObject();
        json.WriteString("mechanism", "discrete Laplace (two-sided geometric), cryptographic random source; counts clamped at 0 after noise");
        json.WriteNumber("epsilon", Epsilon);
        json.WriteNumber("sensitivity", Sensitivity);
        json.WriteNumber("scale", Sensitivity / Epsilon);
        json.WriteNumber("budget", Budget);
        json.WriteNumber("spent", Spent);
        json.WriteNumber("remaining", Math.Max(0, Budget - Spent));
        json.WriteStartArray("cells");
        foreach (var (key, count) in Cells)
        {
            json.WriteStartObject();
            for (var i = 0; i < By.Count; i++)
            {
                json.WriteString(By[i], key[i]);
            }
            json.WriteNumber("count", count);
            json.WriteEndObject();
        }
        json.WriteEndArray();
        json.WriteEndObject();
    }
}

/// <summary>Answers <see cref="CountQuery"/> questions under differential privacy, charging each researcher's ε budget (sequential composition).</summary>
internal static class PrivateCounts
{
    /// <summary>
    /// Computes the exact counts (patients who opted out of research left out), charges ε to the researcher's budget in
    /// one write transaction (refused, with nothing released, when it would exceed the budget), then releases the noisy counts.
    /// </summary>
    public static async Task<CountAnswer> AskAsync(RecordStore store, Blinder blind, string researcher, CountQuery query, DateTime now, CancellationToken ct)
    {
        query.Validate();
        var exact = store.Read(s => Exact(s, blind, query, now));
        var (spent, budget) = await store.WriteAsync(s => s.SpendEpsilon(researcher, query.Epsilon, query.Describe(), now.Ticks), ct);
        var cells = exact.Select(c => (c.Key, Math.Max(0, c.Count + DiscreteLaplace.Noise(query.Epsilon, query.Sensitivity)))).ToList();
        return new CountAnswer(query.By, cells, query.Epsilon, query.Sensitivity, spent, budget);
    }

    /// <summary>The true counts of every cell (fixed domains), patients counted once per cell.</summary>
    public static List<(string[] Key, long Count)> Exact(StoreSession s, Blinder blind, CountQuery query, DateTime now)
    {
        var type = query.Type is null or "Patient" ? null : query.Type;
        var tables = type is null ? [ResearchTable.Named("patients")] : new[] { ResearchTable.Named("patients"), ResearchTable.Named(CountQuery.Tables[type]) };
        var data = ResearchData.Load(s, blind, "differential-privacy", tables, 0, now);
        var patients = data.Rows["patients"].ToDictionary(r => (string)r[0]!, r => (AgeBand((string)r[1]!), Gender((string)r[2]!)), StringComparer.Ordinal);
        // Each patient's codes among those asked (or one empty code when codes only filter, or when there is no type).
        var codesOf = new Dictionary<string, HashSet<string>>(StringComparer.Ordinal);
        if (type is null)
        {
            foreach (var p in patients.Keys)
            {
                codesOf[p] = [""];
            }
        }
        else
        {
            var table = ResearchTable.Named(CountQuery.Tables[type]);
            var codeColumn = table.Columns.Select((c, i) => (c.Name, i)).First(c => c.Name is "code" or "type_code").i;
            var asked = query.Codes.ToHashSet(StringComparer.Ordinal);
            foreach (var row in data.Rows[table.Name])
            {
                var code = row[codeColumn] as string;
                if (asked.Count == 0 || (code is not null && asked.Contains(code)))
                {
                    var set = codesOf.TryGetValue((string)row[1]!, out var existing) ? existing : codesOf[(string)row[1]!] = [];
                    set.Add(query.By.Contains("code") ? code! : "");
                }
            }
        }
        var domains = query.By.Select(d => d switch
        {
            "age-band" => CountQuery.AgeBands,
            "gender" => CountQuery.Genders,
            _ => [.. query.Codes],
        }).ToList();
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var (patient, codes) in codesOf)
        {
            var (age, gender) = patients[patient];
            foreach (var code in codes)
            {
                var key = string.Join('\u001f', query.By.Select(d => d switch { "age-band" => age, "gender" => gender, _ => code }));
                counts[key] = counts.GetValueOrDefault(key) + 1;
            }
        }
        var cells = new List<(string[], long)>();
        foreach (var key in Combinations(domains))
        {
            cells.Add((key, counts.GetValueOrDefault(string.Join('\u001f', key))));
        }
        return cells;
    }

    private static IEnumerable<string[]> Combinations(List<string[]> domains)
    {
        IEnumerable<string[]> result = [[]];
        foreach (var domain in domains)
        {
            result = result.SelectMany(prefix => domain.Select(v => (string[])[.. prefix, v]));
        }
        return result;
    }

    public static string AgeBand(string age) => age == ResearchData.Over89 ? "90+"
        : int.TryParse(age, NumberStyles.None, CultureInfo.InvariantCulture, out var years) ? $"{years / 10 * 10}-{years / 10 * 10 + 9}"
        : ResearchData.Unknown;

    private static string Gender(string gender) => CountQuery.Genders.Contains(gender) ? gender : ResearchData.Unknown;
}

/// <summary>A question the researcher's remaining ε budget cannot pay for.</summary>
internal sealed class BudgetException(string message) : Exception(message);
