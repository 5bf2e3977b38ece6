using System.Collections.Frozen;
using System.Globalization;
using System.Numerics;
using System.Security.Cryptography;
using System.Text;
using Ward.Core.Privacy;

namespace Ward.Core.Imaging;

/// <summary>The options of PS3.15 E.3, each with its Table E.1-1 column and its code (PS3.16 CID 7050).</summary>
[Flags]
internal enum DeidOptions
{
    None = 0,
    RetainSafePrivate = 1 << 0,
    RetainUids = 1 << 1,
    RetainDeviceIdentity = 1 << 2,
    RetainInstitutionIdentity = 1 << 3,
    RetainPatientCharacteristics = 1 << 4,
    RetainFullDates = 1 << 5,
    ModifyDates = 1 << 6,
    CleanDescriptors = 1 << 7,
    CleanStructuredContent = 1 << 8,
    CleanGraphics = 1 << 9,
}

/// <summary>An instance the profile will not release, and why (burned-in annotation).</summary>
internal sealed class DeidentificationRefused(string message) : Exception(message);

/// <summary>
/// PS3.15 Annex E, Basic Application Level Confidentiality Profile, driven by Table E.1-1 of rev 2024b (every row, the
/// combined actions, overlays, curves and private attributes) with the ten profile options. Attributes not in the table
/// are kept; sequences are processed recursively. UIDs are replaced by 2.25 UIDs derived with HMAC-SHA-256 under the
/// caller's key, so the same key maps a study's UIDs (and the references to them) consistently and nobody without the
/// key can map them back. Pixel data is never cleaned, so instances whose pixels may carry burned-in text are refused.
/// </summary>
internal sealed class DicomDeidentifier
{
    public static readonly IReadOnlyList<(DeidOptions Option, string Flag, string Column, string Code, string Meaning)> Options =
    [
        (DeidOptions.RetainSafePrivate, "retain-safe-private", "rtnSafePrivOpt", "113111", "Retain Safe Private Option"),
        (DeidOptions.RetainUids, "retain-uids", "rtnUIDsOpt", "113110", "Retain UIDs Option"),
        (DeidOptions.RetainDeviceIdentity, "retain-device-identity", "rtnDevIdOpt", "113109", "Retain Device Identity Option"),
        (DeidOptions.RetainInstitutionIdentity, "retain-institution-identity", "rtnInstIdOpt", "113112", "Retain Institution Identity Option"),
        (DeidOptions.RetainPatientCharacteristics, "retain-patient-characteristics", "rtnPatCharsOpt", "113108", "Retain Patient Characteristics Option"),
        (DeidOptions.RetainFullDates, "retain-full-dates", "rtnLongFullDatesOpt", "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
        (DeidOptions.ModifyDates, "modify-dates", "rtnLongModifDatesOpt", "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
        (DeidOptions.CleanDescriptors, "clean-descriptors", "cleanDescOpt", "113105", "Clean Descriptors Option"),
        (DeidOptions.CleanStructuredContent, "clean-structured-content", "cleanStructContOpt", "113104", "Clean Structured Content Option"),
        (DeidOptions.CleanGraphics, "clean-graphics", "cleanGraphOpt", "113103", "Clean Graphics Option"),
    ];

    /// <summary>Modalities whose images commonly carry burned-in patient data (ultrasound, captures, photographs, scanned documents).</summary>
    private static readonly FrozenSet<string> BurnedInModalities = FrozenSet.Create(StringComparer.Ordinal, "US", "IVUS", "SC", "OT", "ES", "XC", "GM", "SM", "DOC");

    /// <summary>Combined actions resolved to their first action (as for Type 3), except these, Type 2 where they occur.</summary>
    private static readonly FrozenSet<uint> TypeTwo = FrozenSet.Create(0x0040_0555u /* Acquisition Context Sequence */, 0x300A_00B2u /* Treatment Machine Name */);

    internal sealed record Rule(string Name, string Basic, string?[] OptionActions);

    private static readonly Lazy<(FrozenDictionary<uint, Rule> Exact, Rule Overlay3000, Rule Overlay4000, Rule Curve, Rule Private)> Table = new(LoadTable);

    private readonly DeidOptions options;
    private readonly byte[] key;
    private readonly bool allowBurnedIn;
    private readonly FrozenSet<(string Creator, ushort Group, byte Element)> safePrivate;

    public DicomDeidentifier(DeidOptions options, byte[] key, bool allowBurnedIn = false, IEnumerable<(string Creator, ushort Group, byte Element)>? safePrivate = null)
    {
        if (options.HasFlag(DeidOptions.RetainFullDates) && options.HasFlag(DeidOptions.ModifyDates))
            throw new ArgumentException("Choose at most one of retain-full-dates and modify-dates.", nameof(options));
        if (key.Length < 16) throw new ArgumentException("The de-identification key needs at least 16 bytes.", nameof(key));
        this.options = options;
        this.key = key;
        this.allowBurnedIn = allowBurnedIn;
        this.safePrivate = (safePrivate ?? []).ToFrozenSet();
    }

    /// <summary>Table E.1-1's rows: tag (or mask) and rule, for reports and tests.</summary>
    internal static IEnumerable<(string Tag, Rule Rule)> Rows()
    {
        var (exact, overlay3000, overlay4000, curve, privateRule) = Table.Value;
        foreach (var (tag, rule) in exact) yield return (new DicomTag(tag).Hex, rule);
        yield return ("60XX3000", overlay3000);
        yield return ("60XX4000", overlay4000);
        yield return ("50XXXXXX", curve);
        yield return ("private", privateRule);
    }

    private static (FrozenDictionary<uint, Rule>, Rule, Rule, Rule, Rule) LoadTable()
    {
        using var stream = typeof(DicomDeidentifier).Assembly.GetManifestResourceStream("ps315-table-e1-1.csv")
            ?? throw new InvalidOperationException("The PS3.15 table resource is missing from the build.");
        using var reader = new StreamReader(stream);
        var records = Csv.Read(reader, ',', "ps315-table-e1-1.csv").ToList();
        var header = records[0];
        var columns = Options.Select(o => Array.IndexOf(header, o.Column)).ToArray();
        var (name, id, basic) = (Array.IndexOf(header, "name"), Array.IndexOf(header, "id"), Array.IndexOf(header, "basicProfile"));
        var exact = new Dictionary<uint, Rule>();
        Rule? overlay3000 = null, overlay4000 = null, curve = null, privateRule = null;
        foreach (var record in records.Skip(1))
        {
            var rule = new Rule(record[name], record[basic], [.. columns.Select(c => record[c].Length == 0 ? null : record[c])]);
            switch (record[id].ToUpperInvariant())
            {
                case "60XX3000": overlay3000 = rule; break;
                case "60XX4000": overlay4000 = rule; break;
                case "50XXXXXX": curve = rule; break;
                case var other when other.StartsWith("GGGGEEEE", StringComparison.Ordinal): privateRule = rule; break;
                case var other: exact[uint.Parse(other, NumberStyles.HexNumber, CultureInfo.InvariantCulture)] = rule; break;
            }
        }
        return (exact.ToFrozenDictionary(), overlay3000!, overlay4000!, curve!, privateRule!);
    }

    /// <summary>The one action taken for an element under the chosen options: K, X, Z, D, U or C.</summary>
    internal char ActionFor(DicomTag tag)
    {
        var rule = RuleFor(tag);
        if (rule is null) return 'K';
        var retain = false;
        var clean = false;
        for (var i = 0; i < Options.Count; i++)
        {
            if (!options.HasFlag(Options[i].Option)) continue;
            retain |= rule.OptionActions[i] == "K";
            clean |= rule.OptionActions[i] == "C";
        }
        if (retain) return 'K';
        if (clean) return 'C';
        return rule.Basic switch
        {
            "X/Z" => TypeTwo.Contains(tag.Value) ? 'Z' : 'X',
            "Z/D" => 'Z',
            "X/D" or "X/Z/D" or "X/Z/U*" => 'X',
            var single => single[0],
        };
    }

    private static Rule? RuleFor(DicomTag tag)
    {
        var (exact, overlay3000, overlay4000, curve, privateRule) = Table.Value;
        if (exact.TryGetValue(tag.Value, out var rule)) return rule;
        if (tag.IsPrivate) return privateRule;
        if ((tag.Group & 0xFF01) == 0x6000 && tag.Element == 0x3000) return overlay3000;
        if ((tag.Group & 0xFF01) == 0x6000 && tag.Element == 0x4000) return overlay4000;
        if ((tag.Group & 0xFF01) == 0x5000) return curve;
        return null;
    }

    /// <summary>A de-identified copy of <paramref name="file"/> (the original is not changed).</summary>
    public DicomFile Deidentify(DicomFile file)
    {
        var source = file.Dataset;
        if (WithheldBecause(source) is { } why) throw new DeidentificationRefused(why);
        var context = new Context(this, source);
        var output = Process(source, context);

        output.SetString(DicomTag.PatientIdentityRemoved, DicomVR.CS, "YES");
        var chosen = Options.Where(o => options.HasFlag(o.Option)).ToList();
        output.SetString(DicomTag.DeidentificationMethod, DicomVR.LO,
            string.Join('\\', ["WARD PS3.15 E.1-1 2024B BASIC PROFILE", .. chosen.Select(o => o.Flag.ToUpperInvariant().Replace('-', ' '))]));
        List<DicomDataset> codes = [Code("113100", "Basic Application Confidentiality Profile"), .. chosen.Select(o => Code(o.Code, o.Meaning))];
        output.Set(new DicomElement(DicomTag.DeidentificationMethodCodeSequence, codes));
        output.SetString(DicomTag.LongitudinalTemporalInformationModified, DicomVR.CS,
            options.HasFlag(DeidOptions.RetainFullDates) ? "UNMODIFIED" : options.HasFlag(DeidOptions.ModifyDates) ? "MODIFIED" : "REMOVED");
        return new DicomFile(new DicomDataset(), output, file.TransferSyntax);
    }

    private static DicomDataset Code(string value, string meaning)
    {
        var item = new DicomDataset();
        item.SetString(new DicomTag(0x0008_0100), DicomVR.SH, value);
        item.SetString(new DicomTag(0x0008_0102), DicomVR.SH, "DCM");
        item.SetString(new DicomTag(0x0008_0104), DicomVR.LO, meaning);
        return item;
    }

    /// <summary>Why the profile will not release an instance (its pixels may show burned-in text); null when it will.</summary>
    public string? WithheldBecause(DicomDataset dataset)
    {
        if (allowBurnedIn || !dataset.Contains(DicomTag.PixelData)) return null;
        var burned = dataset.GetString(DicomTag.BurnedInAnnotation);
        if (burned == "YES")
            return "Burned In Annotation (0028,0301) is YES: the pixels show text that may identify the patient, and Ward does not clean pixel data.";
        var modality = dataset.GetString(DicomTag.Modality) ?? "";
        return burned != "NO" && BurnedInModalities.Contains(modality)
            ? $"Modality {modality} commonly carries burned-in patient data and Burned In Annotation (0028,0301) does not say NO; Ward does not clean pixel data."
            : null;
    }

    /// <summary>What one instance's processing needs: the identifiers to scrub from text, the date shift.</summary>
    private sealed class Context
    {
        public Context(DicomDeidentifier owner, DicomDataset root)
        {
            var identifiers = new List<string>();
            foreach (var tag in new[] { DicomTag.PatientName, new DicomTag(0x0010_1001), new DicomTag(0x0010_1060) })
                identifiers.AddRange(root.GetStrings(tag).SelectMany(v => v.Split(['^', '=', ' '], StringSplitOptions.RemoveEmptyEntries)));
            foreach (var tag in new[] { DicomTag.PatientId, new DicomTag(0x0010_1000), DicomTag.PatientBirthDate, DicomTag.AccessionNumber })
                identifiers.AddRange(root.GetStrings(tag));
            Identifiers = [.. identifiers.Where(v => v.Length >= 2).Distinct(StringComparer.OrdinalIgnoreCase).OrderByDescending(v => v.Length)];
            var who = root.GetString(DicomTag.PatientId) is { Length: > 0 } id ? id : root.GetString(DicomTag.StudyInstanceUid) ?? "";
            var hash = owner.Hash("date-shift:" + who);
            var days = (int)(BitConverter.ToUInt32(hash, 0) % 730) - 365;
            ShiftDays = days >= 0 ? days + 1 : days;
        }

        public string[] Identifiers { get; }
        public int ShiftDays { get; }
    }

    private DicomDataset Process(DicomDataset source, Context context)
    {
        var output = new DicomDataset { Charset = source.Charset };
        foreach (var element in source)
        {
            if (element.Tag.IsGroupLength) continue;
            if (element.Tag.IsPrivateCreator)
            {
                if (KeepsPrivateBlock(source, element)) output.Set(element);
                continue;
            }
            var action = ActionFor(element.Tag);
            if (action != 'K' && element.Tag.IsPrivate && options.HasFlag(DeidOptions.RetainSafePrivate) && IsSafePrivate(source, element.Tag)) action = 'K';
            if (element.Items is { } items)
            {
                switch (action)
                {
                    case 'X': break;
                    case 'Z': output.Set(new DicomElement(element.Tag, [])); break;
                    default: output.Set(new DicomElement(element.Tag, [.. items.Select(i => Process(i, context))])); break;
                }
                continue;
            }
            switch (action)
            {
                case 'K': output.Set(element); break;
                case 'X': break;
                case 'Z': output.Set(new DicomElement(element.Tag, element.VR, ReadOnlyMemory<byte>.Empty)); break;
                case 'D' or 'U': output.Set(Dummy(source, element)); break; // a UID's dummy is its remapped UID
                case 'C': if (Clean(source, element, context) is { } cleaned) output.Set(cleaned); break;
                default: throw new InvalidOperationException($"Unknown action {action} for {element.Tag}.");
            }
        }
        return output;
    }

    private bool KeepsPrivateBlock(DicomDataset source, DicomElement creator)
    {
        if (!options.HasFlag(DeidOptions.RetainSafePrivate)) return false;
        var block = (byte)creator.Tag.Element;
        return source.Any(e => e.Tag.Group == creator.Tag.Group && e.Tag.Element >> 8 == block && IsSafePrivate(source, e.Tag));
    }

    private bool IsSafePrivate(DicomDataset source, DicomTag tag)
    {
        if (safePrivate.Count == 0 || tag.Element < 0x1000) return false;
        var creator = source.GetString(new DicomTag(tag.Group, (ushort)(tag.Element >> 8)));
        return creator is not null && safePrivate.Contains((creator, tag.Group, (byte)tag.Element));
    }

    private DicomElement Remap(DicomDataset source, DicomElement element)
    {
        var uids = source.GetStrings(element.Tag);
        return new DicomElement(element.Tag, DicomVR.UI, Encoding.ASCII.GetBytes(string.Join('\\', uids.Select(Uid))));
    }

    /// <summary>The replacement UID: 2.25 and the first 128 bits of HMAC-SHA-256(key, uid) as a decimal integer.</summary>
    public string Uid(string original)
    {
        var hash = Hash("uid:" + original);
        return "2.25." + new BigInteger(hash.AsSpan(0, 16), isUnsigned: true, isBigEndian: true).ToString(CultureInfo.InvariantCulture);
    }

    private byte[] Hash(string input) => HMACSHA256.HashData(key, Encoding.UTF8.GetBytes(input));

    /// <summary>A non-empty value of the element's VR that carries no information.</summary>
    private DicomElement Dummy(DicomDataset source, DicomElement element)
    {
        if (element.VR == DicomVR.UI) return Remap(source, element);
        var text = element.VR switch
        {
            DicomVR.DA => "19000101",
            DicomVR.TM => "000000",
            DicomVR.DT => "19000101000000",
            DicomVR.AS => "000D",
            DicomVR.IS or DicomVR.DS => "0",
            DicomVR.UR => "urn:oid:2.25",
            var vr when vr.IsText() => "ANONYMIZED",
            _ => null,
        };
        return text is not null
            ? new DicomElement(element.Tag, element.VR, Encoding.ASCII.GetBytes(text))
            : new DicomElement(element.Tag, element.VR, new byte[Math.Max(2, element.VR.WordSize())]);
    }

    /// <summary>
    /// C: dates shifted by the patient's offset (modified dates option); text with every identifier of the patient
    /// (name parts, IDs, birth date, accession number) replaced by asterisks; AE titles replaced; values with no
    /// cleaning method (overlay bitmaps, curves, binary) removed.
    /// </summary>
    private DicomElement? Clean(DicomDataset source, DicomElement element, Context context)
    {
        switch (element.VR)
        {
            case DicomVR.DA or DicomVR.DT when options.HasFlag(DeidOptions.ModifyDates):
                var values = source.GetStrings(element.Tag).Select(v => Shift(v, context.ShiftDays));
                return new DicomElement(element.Tag, element.VR, Encoding.ASCII.GetBytes(string.Join('\\', values)));
            case DicomVR.TM when options.HasFlag(DeidOptions.ModifyDates):
                return element; // whole-day shifts keep the time of day
            case DicomVR.AE:
                return new DicomElement(element.Tag, element.VR, "DEIDENTIFIED"u8.ToArray());
            case DicomVR.UI:
                return Remap(source, element);
            case var vr when vr.UsesCharacterSet():
                var text = source.GetString(element.Tag) ?? "";
                foreach (var identifier in context.Identifiers)
                    text = text.Replace(identifier, new string('*', identifier.Length), StringComparison.OrdinalIgnoreCase);
                // Written as ASCII, which every character set shares: characters beyond it become '?'.
                return new DicomElement(element.Tag, vr, Encoding.ASCII.GetBytes(text));
            case var vr when vr.IsText():
                return Dummy(source, element);
            default:
                return null;
        }
    }

    private static string Shift(string value, int days)
    {
        if (value.Length < 8 || !DateTime.TryParseExact(value.AsSpan(0, 8), "yyyyMMdd", CultureInfo.InvariantCulture, DateTimeStyles.None, out var date))
            return value.Length == 0 ? value : "19000101";
        return date.AddDays(days).ToString("yyyyMMdd", CultureInfo.InvariantCulture) + value[8..];
    }
}
