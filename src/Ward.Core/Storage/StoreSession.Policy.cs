using System.Globalization;
using Ward.Core.Policy;

namespace Ward.Core.Storage;

/// <summary>What the access policy reads from the store: compartments and labels of rows, Consent rules, break-the-glass openings.</summary>
internal sealed partial class StoreSession
{
    /// <summary>
    /// The security label rows of <c>ix_token</c> under an alias, for a FROM clause. On SQLite through their partial
    /// index: without statistics the planner takes the rid index instead, and reads every token row of the resource to
    /// find (usually) no label; the partial index answers from a handful of entries.
    /// </summary>
    public string SecurityLabels(string alias) => SecurityLabels(_store.Engine, alias);

    private static string SecurityLabels(StoreEngine engine, string alias) =>
        engine == StoreEngine.Sqlite ? $"ix_token AS {alias} INDEXED BY ix_token_security" : $"ix_token AS {alias}";

    private static readonly Dictionary<StoreEngine, string> RowFactsSql = Enum.GetValues<StoreEngine>().ToDictionary(e => e, e =>
        $"SELECT 0, patient_id, NULL FROM ix_compartment WHERE rid = @r UNION ALL SELECT 1, t.system, t.code FROM {SecurityLabels(e, "t")} WHERE t.rid = @r AND t.param = '_security'");

    /// <summary>The patients whose compartment holds one row and its security labels (current version), in one prepared round trip.</summary>
    public RowFacts PolicyFacts(long rid)
    {
        var facts = new RowFacts("", [], []);
        using var reader = Cmd(RowFactsSql[_store.Engine], ("@r", rid)).ExecuteReader();
        while (reader.Read())
        {
            facts.Add(reader, 0);
        }
        return facts;
    }

    /// <summary>For each row: the patients whose compartment holds it and its security labels (current version), and its type when asked.</summary>
    public Dictionary<long, RowFacts> PolicyFacts(IReadOnlyList<long> rids, bool withType = false)
    {
        var result = new Dictionary<long, RowFacts>();
        foreach (var chunk in rids.Distinct().Chunk(500))
        {
            var list = string.Join(',', chunk);
            foreach (var rid in chunk)
            {
                result[rid] = new RowFacts("", [], []);
            }
            if (withType)
            {
                using var types = AdHoc($"SELECT rid, type FROM resource WHERE rid IN ({list})", []);
                using var typeReader = types.ExecuteReader();
                while (typeReader.Read())
                {
                    result[typeReader.GetInt64(0)] = result[typeReader.GetInt64(0)] with { Type = typeReader.GetString(1) };
                }
            }
            // One round trip: compartments (kind 0) and security labels (kind 1).
            using var cmd = AdHoc($"SELECT rid, 0, patient_id, NULL FROM ix_compartment WHERE rid IN ({list}) UNION ALL SELECT t.rid, 1, t.system, t.code FROM {SecurityLabels("t")} WHERE t.param = '_security' AND t.rid IN ({list})", []);
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                result[reader.GetInt64(0)].Add(reader, 1);
            }
        }
        return result;
    }

    /// <summary>
    /// A set of strings as one bound value (a JSON array on SQLite, a text array on PostgreSQL), so that the text of a
    /// statement testing membership (<see cref="InSet"/>) does not depend on the set's size.
    /// </summary>
    public object SetValue(IEnumerable<string> values) => _store.Engine == StoreEngine.Postgres ? values.ToArray() : JsonArray(values);

    /// <summary>SQL for "<paramref name="column"/> is one of the set bound as <paramref name="parameter"/>" (<see cref="SetValue"/>).</summary>
    public string InSet(string column, string parameter) => _store.Engine == StoreEngine.Postgres
        ? $"{column} = ANY({parameter})"
        : $"{column} IN (SELECT value FROM json_each({parameter}))";

    private static string JsonArray(IEnumerable<string> values)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var json = new System.Text.Json.Utf8JsonWriter(buffer))
        {
            json.WriteStartArray();
            foreach (var v in values)
            {
                json.WriteStringValue(v);
            }
            json.WriteEndArray();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>Consent rules in force at <paramref name="now"/> that concern these actors (or any actor) and these purposes (or any).</summary>
    public List<ConsentRule> ConsentRules(IReadOnlyList<string> actors, IReadOnlyList<string> purposes, long now)
    {
        var args = new List<(string, object?)> { ("@now", now) };
        string Params(string prefix, IReadOnlyList<string> values)
        {
            var names = values.Select((v, i) => { args.Add(($"{prefix}{i}", v)); return $"{prefix}{i}"; }).ToList();
            return string.Join(", ", names);
        }
        var actorCond = actors.Count == 0 ? "c.actor IS NULL" : $"(c.actor IS NULL OR c.actor IN ({Params("@a", actors)}))";
        var sql = $"SELECT c.patient_id, c.effect, c.actor, c.purpose, c.label, c.lo, c.hi FROM ix_consent c WHERE {actorCond} AND (c.purpose IS NULL OR c.purpose IN ({Params("@u", purposes)})) AND c.lo <= @now AND c.hi >= @now";
        using var cmd = AdHoc(sql, args);
        using var reader = cmd.ExecuteReader();
        var rules = new List<ConsentRule>();
        while (reader.Read())
        {
            rules.Add(new ConsentRule(reader.GetString(0), reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2),
                reader.IsDBNull(3) ? null : reader.GetString(3), reader.IsDBNull(4) ? null : reader.GetString(4), reader.GetInt64(5), reader.GetInt64(6)));
        }
        return rules;
    }

    /// <summary>The ids of the PractitionerRoles (not deleted) that name a practitioner.</summary>
    public List<string> RolesOfPractitioner(string practitionerId) => QueryStrings(
        "SELECT r.id FROM ix_reference x JOIN resource r ON r.rid = x.rid WHERE x.target_type = 'Practitioner' AND x.target_id = @i AND x.param = 'practitioner' AND r.type = 'PractitionerRole' AND r.deleted = 0",
        [("@i", practitionerId)]);

    /// <summary>The practitioners and organizations (as references) that PractitionerRoles name.</summary>
    public List<string> NamedByRoles(IReadOnlyList<string> roleIds)
    {
        var args = roleIds.Select((r, i) => ($"@r{i}", (object?)r)).ToList();
        return QueryStrings(
            $"SELECT DISTINCT x.target_type || '/' || x.target_id FROM ix_reference x JOIN resource r ON r.rid = x.rid WHERE r.type = 'PractitionerRole' AND r.id IN ({string.Join(", ", args.Select(a => a.Item1))}) AND x.param IN ('organization', 'practitioner') AND x.target_id IS NOT NULL",
            args);
    }

    /// <summary>
    /// The patients whose records explain a care relationship with one of <paramref name="actors"/> (Practitioner or
    /// PractitionerRole references), by the <paramref name="explanations"/> the policy enables: <c>care-team</c>, an
    /// active CareTeam within its period; <c>encounter</c>, an Encounter within its period that is arrived, triaged, in
    /// progress or on leave, or finished with an end no earlier than <paramref name="cutoff"/>; <c>general-practitioner</c>.
    /// </summary>
    public List<string> RelatedPatients(IReadOnlyList<string> actors, IReadOnlyCollection<string> explanations, long now, long cutoff)
    {
        var args = new List<(string, object?)> { ("@now", now), ("@cutoff", cutoff), ("@open", DateTime.MaxValue.Ticks) };
        var refs = new List<string>();
        foreach (var actor in actors)
        {
            var slash = actor.IndexOf('/');
            var n = args.Count;
            refs.Add($"(x.target_type = @t{n} AND x.target_id = @i{n})");
            args.Add(($"@t{n}", actor[..slash]));
            args.Add(($"@i{n}", actor[(slash + 1)..]));
        }
        // A period (the team's, the encounter's) that has not begun, or ended before the end given, explains nothing.
        static string Within(string end) => $"NOT EXISTS (SELECT 1 FROM ix_date d WHERE d.rid = r.rid AND d.param = 'date' AND (d.lo > @now OR d.hi < {end}))";
        static string Status(string codes) => $"EXISTS (SELECT 1 FROM ix_token s WHERE s.rid = r.rid AND s.param = 'status' AND s.code IN ({codes}))";
        var ways = new List<string>();
        if (explanations.Contains("care-team"))
        {
            ways.Add($"(r.type = 'CareTeam' AND x.param = 'participant' AND {Status("'active'")} AND {Within("@now")})");
        }
        if (explanations.Contains("encounter"))
        {
            ways.Add($"(r.type = 'Encounter' AND x.param = 'participant' AND {Within("@cutoff")} AND ({Status("'arrived', 'triaged', 'in-progress', 'onleave'")}"
                + $" OR ({Status("'finished'")} AND EXISTS (SELECT 1 FROM ix_date d WHERE d.rid = r.rid AND d.param = 'date' AND d.hi < @open))))");
        }
        if (explanations.Contains("general-practitioner"))
        {
            ways.Add("(r.type = 'Patient' AND x.param = 'general-practitioner')");
        }
        return refs.Count == 0 || ways.Count == 0 ? [] : QueryStrings(
            $"SELECT DISTINCT c.patient_id FROM ix_reference x JOIN resource r ON r.rid = x.rid JOIN ix_compartment c ON c.rid = r.rid WHERE ({string.Join(" OR ", refs)}) AND r.deleted = 0 AND ({string.Join(" OR ", ways)})",
            args);
    }

    /// <summary>The patients a user's break-the-glass openings still cover, with the justification of each.</summary>
    public List<(string Patient, string Justification)> GlassInForce(string subject, long now)
    {
        using var reader = Cmd("SELECT patient_id, justification FROM break_glass WHERE subject = @s AND expires > @n ORDER BY id", ("@s", subject), ("@n", now)).ExecuteReader();
        var list = new List<(string, string)>();
        while (reader.Read())
        {
            list.Add((reader.GetString(0), reader.GetString(1)));
        }
        return list;
    }

    /// <summary>Marks this transaction as one that changes access decisions: the policy's cached facts go stale when it commits.</summary>
    private void PolicyChanged()
    {
        if (!_policyChanged)
        {
            _policyChanged = true;
            OnCommitted(_store.PolicyChanged);
        }
    }

    private bool _policyChanged;

    /// <summary>Records a use of break-the-glass: a new opening (a review item), or one more use of the opening in force.</summary>
    public void BreakGlass(string subject, string? role, string? fhirUser, string patient, string justification, long now, long expires)
    {
        EnsureWriter();
        PolicyChanged();
        var updated = Cmd("UPDATE break_glass SET uses = uses + 1 WHERE id = (SELECT max(id) FROM break_glass WHERE subject = @s AND patient_id = @p AND expires > @n)",
            ("@s", subject), ("@p", patient), ("@n", now)).ExecuteNonQuery();
        if (updated == 0)
        {
            Cmd("INSERT INTO break_glass (subject, role, fhir_user, patient_id, opened, expires, justification, uses) VALUES (@s, @r, @f, @p, @n, @e, @j, 1)",
                ("@s", subject), ("@r", role), ("@f", fhirUser), ("@p", patient), ("@n", now), ("@e", expires), ("@j", justification)).ExecuteNonQuery();
        }
    }

    /// <summary>Break-the-glass openings, newest first: those awaiting review, or all.</summary>
    public List<GlassOpening> GlassOpenings(bool all)
    {
        using var reader = Cmd($"SELECT id, subject, role, fhir_user, patient_id, opened, expires, justification, uses, reviewed, reviewer, review_note FROM break_glass{(all ? "" : " WHERE reviewed IS NULL")} ORDER BY id DESC").ExecuteReader();
        var list = new List<GlassOpening>();
        while (reader.Read())
        {
            string? S(int i) => reader.IsDBNull(i) ? null : reader.GetString(i);
            list.Add(new GlassOpening(reader.GetInt64(0), reader.GetString(1), S(2), S(3), reader.GetString(4), reader.GetInt64(5), reader.GetInt64(6), reader.GetString(7),
                reader.GetInt32(8), reader.IsDBNull(9) ? null : reader.GetInt64(9), S(10), S(11)));
        }
        return list;
    }

    /// <summary>Marks an opening reviewed; false when there is no such opening or it was reviewed already.</summary>
    public bool ReviewGlass(long id, string reviewer, string note, long now)
    {
        EnsureWriter();
        return Cmd("UPDATE break_glass SET reviewed = @n, reviewer = @r, review_note = @t WHERE id = @i AND reviewed IS NULL",
            ("@n", now), ("@r", reviewer), ("@t", note), ("@i", id)).ExecuteNonQuery() == 1;
    }
}

/// <summary>What the policy needs to know of one stored resource.</summary>
internal sealed record RowFacts(string Type, List<string> Patients, List<(string? System, string? Code)> Labels)
{
    /// <summary>Adds a fact read from columns (kind, value, value) from <paramref name="at"/>: kind 0 a patient, 1 a security label (system, code).</summary>
    public void Add(System.Data.Common.DbDataReader reader, int at)
    {
        string? Text(int i) => reader.IsDBNull(i) ? null : reader.GetString(i);
        if (reader.GetInt32(at) == 0)
        {
            Patients.Add(reader.GetString(at + 1));
        }
        else
        {
            Labels.Add((Text(at + 1), Text(at + 2)));
        }
    }
}

/// <summary>One break-the-glass opening: who, which patient, when, why, how often used, and its review.</summary>
internal sealed record GlassOpening(long Id, string Subject, string? Role, string? FhirUser, string Patient, long Opened, long Expires, string Justification,
    int Uses, long? Reviewed, string? Reviewer, string? ReviewNote)
{
    public string OpenedText => new DateTime(Opened, DateTimeKind.Utc).ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture);
}
