using System.Text;
using Hl7.Fhir.Model;
using Ward.Core.Crypto;
using Ward.Core.Access;
using Ward.Core.Fhir;
using Ward.Core.Policy;
using Ward.Core.Storage;

namespace Ward.Core.Search;

/// <summary>
/// Turns search criteria into SQL over the index tables. Every value is a bound parameter; only parameter codes
/// validated against the registry and fixed fragments are ever written into the SQL text.
/// </summary>
internal sealed class SqlSearch
{
    private readonly List<(string Name, object? Value)> _args = [];
    private readonly string? _baseUrl;
    private readonly Blinder _blind;
    private readonly StoreEngine _engine;
    private readonly CallerAccess? _access;
    private readonly StoreSession? _session;
    private int _alias;

    /// <summary>With <paramref name="access"/>, every resource the search reaches (the matches, and those its chains and _has go through) is filtered by the access policy.</summary>
    public SqlSearch(string? baseUrl, Blinder blind, StoreEngine engine, CallerAccess? access = null, StoreSession? session = null)
    {
        _baseUrl = baseUrl?.TrimEnd('/') + "/";
        _blind = blind;
        _engine = engine;
        _access = access;
        _session = session;
    }

    /// <summary>
    /// " AND (policy condition)" for a resource of <paramref name="type"/> under <paramref name="alias"/> that the search
    /// goes through (of one patient's records when <paramref name="patient"/> is known); 403 when the caller may not read that type at all.
    /// </summary>
    private string Permitted(string type, string alias, string? patient = null)
    {
        if (_access is null)
        {
            return "";
        }
        _access.DecideType(Interaction.Search, type, countOnly: true).Require();
        return _access.RowFilter(_session!, alias, Arg, patient) is { } filter ? " AND " + filter : "";
    }

    /// <summary>The one patient whose records a search is of (a compartment search, or patient= or subject=Patient/ with one value), if any.</summary>
    private static string? OnePatient(SearchQuery query)
    {
        if (query.CompartmentPatient is { } pid)
        {
            return pid;
        }
        foreach (var (name, value) in query.Criteria)
        {
            var id = name switch
            {
                "patient" => value.StartsWith("Patient/", StringComparison.Ordinal) ? value[8..] : value,
                "subject" when value.StartsWith("Patient/", StringComparison.Ordinal) => value[8..],
                _ => null,
            };
            if (id is { Length: > 0 } && id.AsSpan().IndexOfAny(",/|:\\") < 0)
            {
                return id;
            }
        }
        return null;
    }

    public IReadOnlyList<(string Name, object? Value)> Args => _args;

    private string Arg(object? value)
    {
        var name = "@a" + _args.Count.ToString(System.Globalization.CultureInfo.InvariantCulture);
        _args.Add((name, value));
        return name;
    }

    /// <summary>The WHERE clause (over alias <c>r</c>) for a search of <paramref name="query"/>.</summary>
    public string Where(SearchQuery query)
    {
        // With criteria, drive the query from their (selective) indexes: the unary '+' keeps SQLite from scanning the type index
        // (PostgreSQL's planner weighs the indexes by their statistics and needs no hint).
        var driven = _engine == StoreEngine.Sqlite && (query.Criteria.Count > 0 || query.CompartmentPatient is not null);
        var parts = new List<string> { $"{(driven ? "+" : "")}r.type = {Arg(query.Type)}", "r.deleted = 0" };
        if (query.CompartmentPatient is { } pid)
        {
            parts.Add(query.Type == "Patient"
                ? $"r.id = {Arg(pid)}"
                : $"r.rid IN (SELECT rid FROM ix_compartment WHERE patient_id = {Arg(pid)})");
        }
        foreach (var c in query.Criteria)
        {
            parts.Add(Criterion(query.Type, "r", c.Name, c.Value));
        }
        return string.Join(" AND ", parts) + Permitted(query.Type, "r", OnePatient(query));
    }

    public string OrderBy(SearchQuery query, string alias = "r")
    {
        var keys = new List<string>();
        foreach (var (name, desc) in query.Sort)
        {
            var sp = SearchParameters.Find(query.Type, name)!;
            if (sp.Blind)
            {
                throw FhirException.BadRequest($"Results cannot be sorted by '{name}': it holds identifying values, which this node indexes only as keyed hashes "
                    + "(encryption at rest), so they have no order. Sort by another parameter, or sort the page on the client.", OperationOutcome.IssueType.NotSupported);
            }
            // Resources without a value come first in ascending order, last in descending order, on both engines.
            var dir = desc ? " DESC NULLS LAST" : " ASC NULLS FIRST";
            var agg = desc ? "max" : "min";
            var p = Arg(sp.Code);
            var expr = sp.Code switch
            {
                "_id" => $"{alias}.id",
                "_lastUpdated" => $"{alias}.last_updated",
                _ => sp.Type switch
                {
                    ParamType.String => $"(SELECT {agg}(value) FROM ix_string WHERE rid = {alias}.rid AND param = {p})",
                    ParamType.Token => $"(SELECT {agg}(code) FROM ix_token WHERE rid = {alias}.rid AND param = {p})",
                    ParamType.Date => $"(SELECT {(desc ? "max(hi)" : "min(lo)")} FROM ix_date WHERE rid = {alias}.rid AND param = {p})",
                    ParamType.Number => $"(SELECT {agg}(lo) FROM ix_number WHERE rid = {alias}.rid AND param = {p})",
                    ParamType.Quantity => $"(SELECT {agg}(lo) FROM ix_quantity WHERE rid = {alias}.rid AND param = {p})",
                    ParamType.Uri => $"(SELECT {agg}(value) FROM ix_uri WHERE rid = {alias}.rid AND param = {p})",
                    ParamType.Reference => $"(SELECT {agg}(coalesce(target_type || '/' || target_id, url)) FROM ix_reference WHERE rid = {alias}.rid AND param = {p})",
                    _ => throw FhirException.NotSupported($"Sorting by the {sp.Type.ToString().ToLowerInvariant()} parameter '{name}' is not supported."),
                },
            };
            keys.Add(expr + dir);
        }
        keys.Add($"{alias}.rid ASC");
        return string.Join(", ", keys);
    }

    private string Criterion(string type, string alias, string name, string value)
    {
        if (name.StartsWith("_has:", StringComparison.Ordinal))
        {
            return Has(type, alias, name, value);
        }
        var dot = name.IndexOf('.');
        if (dot > 0)
        {
            return Chain(type, alias, name[..dot], name[(dot + 1)..], value);
        }
        var colon = name.IndexOf(':');
        var code = colon < 0 ? name : name[..colon];
        var modifier = colon < 0 ? null : name[(colon + 1)..];
        var sp = SearchParameters.Find(type, code)
            ?? throw FhirException.NotSupported($"The search parameter '{code}' is not supported for {type}.");
        if (modifier == "missing")
        {
            return Missing(sp, alias, value);
        }
        var values = SearchQuery.SplitOr(value);
        if (modifier == "not" && sp.Type == ParamType.Token)
        {
            var any = string.Join(" OR ", values.Select(v => Single(sp, alias, null, v)));
            return $"NOT ({any})";
        }
        if (values.Count == 1)
        {
            return Single(sp, alias, modifier, values[0]);
        }
        return "(" + string.Join(" OR ", values.Select(v => Single(sp, alias, modifier, v))) + ")";
    }

    private string Missing(SearchParam sp, string alias, string value)
    {
        var missing = value switch
        {
            "true" => true,
            "false" => false,
            _ => throw FhirException.BadRequest($"The :missing modifier takes true or false, not '{value}'."),
        };
        if (sp.IsIntrinsic)
        {
            return missing ? "FALSE" : "TRUE";
        }
        var sub = $"{alias}.rid IN (SELECT rid FROM {Table(sp.Type)} WHERE param = {Arg(sp.Code)})";
        return missing ? "NOT " + sub : sub;
    }

    private static string Table(ParamType type) => type switch
    {
        ParamType.String => "ix_string",
        ParamType.Token => "ix_token",
        ParamType.Date => "ix_date",
        ParamType.Number => "ix_number",
        ParamType.Quantity => "ix_quantity",
        ParamType.Uri => "ix_uri",
        ParamType.Reference => "ix_reference",
        ParamType.Composite => "ix_composite",
        _ => throw new ArgumentOutOfRangeException(nameof(type)),
    };

    private string In(SearchParam sp, string alias, string condition) =>
        $"{alias}.rid IN (SELECT rid FROM {Table(sp.Type)} WHERE param = {Arg(sp.Code)} AND {condition})";

    private string Single(SearchParam sp, string alias, string? modifier, string raw)
    {
        if (sp.Code == "_id")
        {
            return $"{alias}.id = {Arg(SearchQuery.Unescape(raw))}";
        }
        if (sp.Code == "_lastUpdated")
        {
            var (prefix, text) = Prefix(raw);
            return DateCondition($"{alias}.last_updated", $"{alias}.last_updated", prefix, text);
        }
        switch (sp.Type)
        {
            case ParamType.String when sp.Blind:
            {
                var v = SearchQuery.Unescape(raw);
                var normalized = SearchValues.Normalize(v);
                return modifier switch
                {
                    null when normalized.Length == 0 => In(sp, alias, "TRUE"),
                    null => In(sp, alias, $"value = {Arg(_blind.Hash(Blinder.Prefix, sp.Code, normalized))}"),
                    "exact" => In(sp, alias, $"exact = {Arg(_blind.Hash(Blinder.Exact, sp.Code, v))}"),
                    _ => throw BlindModifier(sp, modifier, "only whole values and their beginnings can be matched (the default search, and :exact)"),
                };
            }
            case ParamType.Token when sp.Blind:
                return modifier is null
                    ? In(sp, alias, Token(raw, "system", "code", sp))
                    : throw BlindModifier(sp, modifier, "only whole codes can be matched (code, system|code, |code, system|, and :not)");
            case ParamType.String:
            {
                var v = SearchQuery.Unescape(raw);
                return modifier switch
                {
                    null => In(sp, alias, StartsWith("value", SearchValues.Normalize(v))),
                    "exact" => In(sp, alias, $"exact = {Arg(v)}"),
                    "contains" => In(sp, alias, $"value LIKE {Arg("%" + EscapeLike(SearchValues.Normalize(v)) + "%")} ESCAPE '\\'"),
                    _ => throw UnsupportedModifier(sp, modifier),
                };
            }
            case ParamType.Token:
                return modifier switch
                {
                    null => In(sp, alias, Token(raw, "system", "code")),
                    "text" => In(sp, alias, StartsWith("text", SearchValues.Normalize(SearchQuery.Unescape(raw)))),
                    _ => throw UnsupportedModifier(sp, modifier),
                };
            case ParamType.Date:
            {
                if (modifier is not null) throw UnsupportedModifier(sp, modifier);
                var (prefix, text) = Prefix(raw);
                return In(sp, alias, DateCondition("lo", "hi", prefix, text));
            }
            case ParamType.Number:
            {
                if (modifier is not null) throw UnsupportedModifier(sp, modifier);
                var (prefix, text) = Prefix(raw);
                return In(sp, alias, NumberCondition(prefix, text));
            }
            case ParamType.Quantity:
            {
                if (modifier is not null) throw UnsupportedModifier(sp, modifier);
                return In(sp, alias, QuantityCondition(raw, "system", "code"));
            }
            case ParamType.Uri:
            {
                var v = SearchQuery.Unescape(raw);
                return modifier switch
                {
                    null => In(sp, alias, $"value = {Arg(v)}"),
                    "below" => In(sp, alias, StartsWith("value", v)),
                    "above" => In(sp, alias, $"{Arg(v)} >= value AND substr({Arg(v)}, 1, length(value)) = value"),
                    _ => throw UnsupportedModifier(sp, modifier),
                };
            }
            case ParamType.Reference:
                return In(sp, alias, ReferenceCondition(sp, modifier, SearchQuery.Unescape(raw)));
            case ParamType.Composite:
            {
                if (modifier is not null) throw UnsupportedModifier(sp, modifier);
                return In(sp, alias, CompositeCondition(sp, raw));
            }
            default:
                throw FhirException.NotSupported($"The search parameter '{sp.Code}' cannot be searched.");
        }
    }

    private static FhirException BlindModifier(SearchParam sp, string modifier, string what) =>
        FhirException.BadRequest($"The modifier ':{modifier}' cannot be used on '{sp.Code}': it holds identifying values, which this node indexes only as keyed hashes "
            + $"(encryption at rest), so {what}.", OperationOutcome.IssueType.NotSupported);

    private static FhirException UnsupportedModifier(SearchParam sp, string modifier) =>
        FhirException.NotSupported($"The modifier ':{modifier}' is not supported on the {sp.Type.ToString().ToLowerInvariant()} parameter '{sp.Code}'.");

    private string StartsWith(string column, string prefix) =>
        prefix.Length == 0 ? "TRUE" : $"{column} >= {Arg(prefix)} AND {column} < {Arg(prefix + char.MaxValue)}";

    private static string EscapeLike(string s) => s.Replace("\\", "\\\\").Replace("%", "\\%").Replace("_", "\\_");

    /// <summary>A token match; the code is compared as its keyed hash when <paramref name="blind"/> names an identifying parameter.</summary>
    internal string Token(string raw, string systemColumn, string codeColumn, SearchParam? blind = null)
    {
        var parts = SearchQuery.SplitOr(raw, '|');
        string Code(string code) => Arg(blind is null ? code : _blind.Hash(Blinder.Token, blind.Code, code));
        if (parts.Count == 1)
        {
            return $"{codeColumn} = {Code(SearchQuery.Unescape(parts[0]))}";
        }
        if (parts.Count != 2)
        {
            throw FhirException.BadRequest($"The token '{raw}' must be code, system|code, |code or system|.");
        }
        var system = SearchQuery.Unescape(parts[0]);
        var code = SearchQuery.Unescape(parts[1]);
        var sys = system.Length == 0 ? $"{systemColumn} IS NULL" : $"{systemColumn} = {Arg(system)}";
        return code.Length == 0 ? sys : $"{codeColumn} = {Code(code)} AND {sys}";
    }

    private static readonly string[] Prefixes = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"];

    internal static (string Prefix, string Value) Prefix(string raw) =>
        raw.Length > 2 && Prefixes.Contains(raw[..2]) && (char.IsDigit(raw[2]) || raw[2] == '-')
            ? (raw[..2], raw[2..])
            : ("eq", raw);

    /// <summary>Date comparison exactly as FHIR R4 §3.1.1.5.7: both sides are ranges.</summary>
    internal string DateCondition(string lo, string hi, string prefix, string text)
    {
        if (!SearchValues.TryParseDateRange(text, out var plo, out var phi))
        {
            throw FhirException.BadRequest($"'{text}' is not a valid FHIR date or dateTime (expected e.g. 2024, 2024-05, 2024-05-17 or 2024-05-17T10:00:00Z).");
        }
        var a = Arg(plo);
        var b = Arg(phi);
        var eq = $"({lo} >= {a} AND {hi} <= {b})";
        return prefix switch
        {
            "eq" => eq,
            "ne" => $"NOT {eq}",
            "gt" => $"{hi} > {b}",
            "lt" => $"{lo} < {a}",
            "ge" => $"({hi} > {b} OR {eq})",
            "le" => $"({lo} < {a} OR {eq})",
            "sa" => $"{lo} > {b}",
            "eb" => $"{hi} < {a}",
            "ap" => Approximately(lo, hi, plo, phi),
            _ => throw new ArgumentOutOfRangeException(nameof(prefix)),
        };
    }

    private string Approximately(string lo, string hi, long plo, long phi)
    {
        var now = DateTime.UtcNow.Ticks;
        var slack = (long)(Math.Abs(now - plo) * 0.1);
        return $"({hi} >= {Arg(plo - slack)} AND {lo} <= {Arg(Math.Min(DateTime.MaxValue.Ticks, phi + slack))})";
    }

    private string NumberCondition(string prefix, string text)
    {
        if (!SearchValues.TryParseDecimal(text, out var value))
        {
            throw FhirException.BadRequest($"'{text}' is not a valid number.");
        }
        var (plo, phi) = SearchValues.NumberRange(value);
        var v = Arg((double)value);
        return prefix switch
        {
            "eq" => $"(lo >= {Arg(plo)} AND hi < {Arg(phi)})",
            "ne" => $"NOT (lo >= {Arg(plo)} AND hi < {Arg(phi)})",
            "gt" => $"hi > {v}",
            "lt" => $"lo < {v}",
            "ge" => $"hi >= {v}",
            "le" => $"lo <= {v}",
            "sa" => $"lo > {v}",
            "eb" => $"hi < {v}",
            "ap" => $"(hi >= {Arg((double)value - Math.Abs((double)value) * 0.1)} AND lo <= {Arg((double)value + Math.Abs((double)value) * 0.1)})",
            _ => throw new ArgumentOutOfRangeException(nameof(prefix)),
        };
    }

    private string ReferenceCondition(SearchParam sp, string? modifier, string value)
    {
        if (modifier is not null && !SearchParameters.IsKnownType(modifier))
        {
            throw UnsupportedModifier(sp, modifier);
        }
        var local = value;
        if (_baseUrl is not null && value.StartsWith(_baseUrl, StringComparison.Ordinal))
        {
            local = value[_baseUrl.Length..];
        }
        if (ReferenceParser.TryParseLocal(local, out var type, out var id))
        {
            if (modifier is not null && modifier != type)
            {
                return "FALSE";
            }
            return $"target_id = {Arg(id)} AND target_type = {Arg(type)}";
        }
        if (ReferenceParser.IsValidId(local))
        {
            return modifier is not null
                ? $"target_id = {Arg(local)} AND target_type = {Arg(modifier)}"
                : $"target_id = {Arg(local)}";
        }
        // A canonical's version (url|version) is not indexed; a conditional reference's search (Patient?identifier=system|value) is, whole.
        var bar = value.Contains('?', StringComparison.Ordinal) ? -1 : value.IndexOf('|');
        return $"url = {Arg(Indexer.BlindUrl(_blind, sp.Code, bar > 0 ? value[..bar] : value))}";
    }

    private string CompositeCondition(SearchParam sp, string raw)
    {
        var parts = SearchQuery.SplitOr(raw, '$');
        if (parts.Count != 2)
        {
            throw FhirException.BadRequest($"The composite value '{raw}' must have two parts joined by '$'.");
        }
        var first = sp.Components[0].Type == ParamType.Token
            ? Token(parts[0], "system1", "code1")
            : $"code1 = {Arg(sp.Components[0].Type == ParamType.Reference ? SearchQuery.Unescape(parts[0]) : SearchValues.Normalize(SearchQuery.Unescape(parts[0])))}";
        var second = sp.Components[1].Type switch
        {
            ParamType.Token => Token(parts[1], "system2", "code2"),
            ParamType.Quantity or ParamType.Number => QuantityCondition(parts[1], "system2", "code2"),
            ParamType.Date => DatePart(parts[1]),
            ParamType.Reference => $"code2 = {Arg(SearchQuery.Unescape(parts[1]))}",
            _ => StartsWith("code2", SearchValues.Normalize(SearchQuery.Unescape(parts[1]))),
        };
        return first + " AND " + second;
    }

    /// <summary><c>[prefix]number[|system|code]</c> against the lo/hi range and the given unit columns.</summary>
    private string QuantityCondition(string raw, string systemColumn, string codeColumn)
    {
        var (prefix, rest) = Prefix(raw);
        var parts = SearchQuery.SplitOr(rest, '|');
        if (parts.Count is not (1 or 3))
        {
            throw FhirException.BadRequest($"The quantity '{raw}' must be number, or number|system|code.");
        }
        var cond = NumberCondition(prefix, SearchQuery.Unescape(parts[0]));
        if (parts.Count == 3)
        {
            if (parts[1].Length > 0) cond += $" AND {systemColumn} = {Arg(SearchQuery.Unescape(parts[1]))}";
            if (parts[2].Length > 0) cond += $" AND {codeColumn} = {Arg(SearchQuery.Unescape(parts[2]))}";
        }
        return cond;
    }

    private string DatePart(string raw)
    {
        var (prefix, text) = Prefix(raw);
        return DateCondition("lo", "hi", prefix, text);
    }

    /// <summary>Chained parameter: <c>subject:Patient.name=peter</c>.</summary>
    private string Chain(string type, string alias, string head, string rest, string value)
    {
        var colon = head.IndexOf(':');
        var code = colon < 0 ? head : head[..colon];
        var targetModifier = colon < 0 ? null : head[(colon + 1)..];
        var sp = SearchParameters.Find(type, code);
        if (sp is not { Type: ParamType.Reference })
        {
            throw FhirException.BadRequest($"Cannot chain through '{code}': it is not a reference parameter of {type}.");
        }
        var targets = targetModifier is not null ? [targetModifier] : sp.Targets.Where(SearchParameters.IsKnownType).ToList();
        var restCode = rest.Split('.', ':')[0];
        var usable = targets.Where(t => restCode.StartsWith("_has", StringComparison.Ordinal) || SearchParameters.Find(t, restCode) is not null).ToList();
        if (usable.Count == 0)
        {
            throw FhirException.BadRequest($"Cannot chain '{code}.{rest}': no target type of '{code}' has a search parameter '{restCode}'. Name the target type, for example {code}:Patient.{rest}.");
        }
        var t = "t" + (++_alias).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var byType = usable.Select(tt => $"({t}.type = {Arg(tt)} AND {Criterion(tt, t, rest, value)}{Permitted(tt, t)})");
        return $"{alias}.rid IN (SELECT x.rid FROM ix_reference x JOIN resource {t} ON {t}.type = x.target_type AND {t}.id = x.target_id " +
               $"WHERE x.param = {Arg(sp.Code)} AND {t}.deleted = 0 AND ({string.Join(" OR ", byType)}))";
    }

    /// <summary>Reverse chaining: <c>_has:Observation:patient:code=1234-5</c>.</summary>
    private string Has(string type, string alias, string name, string value)
    {
        var parts = name.Split(':', 4);
        if (parts.Length != 4 || !SearchParameters.IsKnownType(parts[1]))
        {
            throw FhirException.BadRequest($"'{name}' must have the form _has:Type:reference-parameter:search-parameter.");
        }
        var source = parts[1];
        var reference = SearchParameters.Find(source, parts[2]);
        if (reference is not { Type: ParamType.Reference })
        {
            throw FhirException.BadRequest($"'{parts[2]}' is not a reference parameter of {source}.");
        }
        var s = "h" + (++_alias).ToString(System.Globalization.CultureInfo.InvariantCulture);
        return $"{alias}.id IN (SELECT x.target_id FROM ix_reference x JOIN resource {s} ON {s}.rid = x.rid " +
               $"WHERE x.param = {Arg(reference.Code)} AND x.target_type = {Arg(type)} AND {s}.type = {Arg(source)} AND {s}.deleted = 0 AND {Criterion(source, s, parts[3], value)}{Permitted(source, s)})";
    }

    /// <summary>Rows that the includes of <paramref name="query"/> add to a page of matches.</summary>
    public static List<long> Includes(StoreSession session, SearchQuery query, List<StoredVersion> matches)
    {
        var seen = new HashSet<long>(matches.Select(m => m.Rid));
        var added = new List<long>();
        var frontier = matches;
        for (var round = 0; frontier.Count > 0 && round < 4; round++)
        {
            var found = new List<long>();
            foreach (var spec in query.Includes.Where(s => round == 0 || s.Iterate))
            {
                found.AddRange(Forward(session, spec, frontier));
            }
            foreach (var spec in query.RevIncludes.Where(s => round == 0 || s.Iterate))
            {
                found.AddRange(Reverse(session, spec, frontier));
            }
            var fresh = found.Where(seen.Add).ToList();
            added.AddRange(fresh);
            if (!query.Includes.Any(s => s.Iterate) && !query.RevIncludes.Any(s => s.Iterate))
            {
                break;
            }
            frontier = session.LoadCurrent(fresh);
            if (added.Count > 10_000)
            {
                throw FhirException.BadRequest("The includes of this search reach more than 10,000 resources; narrow the search or page through it.");
            }
        }
        return added;
    }

    private static IEnumerable<long> Forward(StoreSession session, IncludeSpec spec, List<StoredVersion> from)
    {
        var rids = from.Where(f => f.Type == spec.SourceType).Select(f => f.Rid).ToList();
        if (rids.Count == 0)
        {
            return [];
        }
        var sb = new StringBuilder("SELECT t.rid FROM ix_reference x JOIN resource t ON t.type = x.target_type AND t.id = x.target_id WHERE t.deleted = 0 AND x.rid IN (");
        sb.Append(string.Join(',', rids)).Append(')');
        var args = new List<(string, object?)>();
        if (spec.Param != "*")
        {
            sb.Append(" AND x.param = @p");
            args.Add(("@p", spec.Param));
        }
        if (spec.TargetType is not null)
        {
            sb.Append(" AND x.target_type = @t");
            args.Add(("@t", spec.TargetType));
        }
        return session.QueryRids(sb.ToString(), args);
    }

    private static IEnumerable<long> Reverse(StoreSession session, IncludeSpec spec, List<StoredVersion> to)
    {
        var result = new List<long>();
        foreach (var group in to.GroupBy(t => t.Type))
        {
            if (spec.TargetType is not null && spec.TargetType != group.Key)
            {
                continue;
            }
            var args = new List<(string, object?)> { ("@s", spec.SourceType), ("@t", group.Key) };
            var ids = group.Select((g, i) => { args.Add(("@i" + i, g.Id)); return "@i" + i; });
            var sql = "SELECT s.rid FROM ix_reference x JOIN resource s ON s.rid = x.rid WHERE s.type = @s AND s.deleted = 0 AND x.target_type = @t AND x.target_id IN ("
                + string.Join(',', ids) + ")" + (spec.Param == "*" ? "" : " AND x.param = @p");
            if (spec.Param != "*")
            {
                args.Add(("@p", spec.Param));
            }
            result.AddRange(session.QueryRids(sql, args));
        }
        return result;
    }
}
