using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Ward.Core.Imaging;
using Xunit;

namespace Ward.Tests;

/// <summary>
/// The DICOM codec against the sample files of ../shared/data/dicom and two independent implementations: pydicom
/// (tests/tools/dicom_values.py reads every value) and dcmtk's dcmdump (reads what we write, refuses what is broken).
/// </summary>
public sealed class DicomCodecTests
{
    private static string Dir => Path.Combine(TestData.Root, "dicom");

    /// <summary>The broken samples: each is refused, with the reason (all but the last are refused by dcmdump too).</summary>
    private static readonly Dictionary<string, string> Broken = new()
    {
        // Its last directory record declares 248 bytes and the file ends 24 bytes earlier (the sample had two elements
        // cut out and its lengths left as they were); dcmdump and pydicom read on to the end of the file regardless.
        ["pydicom/test_files/dicomdirtests/DICOMDIR-nooffset"] = "Truncated: item of (0004,1220)",
        // Pixel data declares 8192 bytes; the file ends first.
        ["pydicom/test_files/MR_truncated.dcm"] = "Truncated: (7FE0,0010)",
        // Cut inside a sequence item.
        ["pydicom/test_files/rtplan_truncated.dcm"] = "Truncated",
        // Its preamble was cut one byte short, so no header is where one must be (pydicom reads one garbage element).
        ["pydicom/test_files/no_meta.dcm"] = "Not DICOM",
    };

    internal static IEnumerable<string> SampleFiles() => Directory.EnumerateFiles(Dir, "*", SearchOption.AllDirectories)
        .Where(f => Path.GetExtension(f) is not (".txt" or ".md" or ".dump" or ".tsv" or ".json") && Path.GetFileName(f) != "README")
        .Order(StringComparer.Ordinal);

    private static string Relative(string file) => Path.GetRelativePath(Dir, file).Replace('\\', '/');

    [Fact]
    public void Every_sample_is_read_or_refused_as_the_catalogue_predicts()
    {
        var catalogue = File.ReadLines(Path.Combine(Dir, "CATALOG.tsv")).Skip(1)
            .Select(l => l.Split('\t'))
            .ToDictionary(p => p[0].StartsWith("samples/", StringComparison.Ordinal) ? p[0]["samples/".Length..] : p[0]);
        var files = SampleFiles().ToList();
        Assert.True(files.Count >= 200, $"only {files.Count} sample files");
        var checkedAgainstCatalogue = 0;
        foreach (var file in files)
        {
            var name = Relative(file);
            DicomFile dicom;
            try
            {
                dicom = DicomFile.Read(File.ReadAllBytes(file));
            }
            catch (DicomException e)
            {
                Assert.True(Broken.TryGetValue(name, out var reason), $"{name} refused: {e.Message}");
                Assert.StartsWith(reason, e.Message, StringComparison.Ordinal);
                continue;
            }
            Assert.False(Broken.ContainsKey(name), $"{name} is broken but was read");
            if (!catalogue.TryGetValue(name, out var row)) continue;
            var elements = dicom.Dataset.Walk().ToList();
            Assert.True(SyntaxName(dicom) == row[2], $"{name}: syntax {SyntaxName(dicom)}, catalogue {row[2]}");
            Assert.True(elements.Count(e => (e.Tag.Group & 1) == 1) == int.Parse(row[7]), $"{name}: private elements");
            Assert.True(elements.Count(e => e.Items is not null) == int.Parse(row[8]), $"{name}: sequences");
            Assert.True(Depth(dicom.Dataset) == int.Parse(row[9]), $"{name}: sequence depth {Depth(dicom.Dataset)}");
            Assert.True(dicom.Dataset.Contains(DicomTag.PixelData) == (row[6] == "True"), $"{name}: pixel data");
            checkedAgainstCatalogue++;
        }
        Assert.True(checkedAgainstCatalogue >= 130, $"{checkedAgainstCatalogue} files checked against the catalogue");
    }

    [Fact]
    public async Task The_broken_samples_are_refused_by_dcmdump_too()
    {
        foreach (var name in Broken.Keys.Where(n => !n.EndsWith("DICOMDIR-nooffset", StringComparison.Ordinal)))
        {
            var (code, _, error) = await ExternalTool.RunAsync("dcmdump", [Path.Combine(Dir, name)]);
            Assert.True(code != 0, $"dcmdump read {name}");
            Assert.Contains("E: ", error, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Values_match_pydicom_and_what_we_write_reads_back_identically_in_pydicom_and_dcmdump()
    {
        var output = Directory.CreateTempSubdirectory("ward-dicom-");
        try
        {
            var originals = new List<string>();
            var written = new List<string>();
            var ours = new Dictionary<string, Dictionary<string, string>>();
            foreach (var file in SampleFiles().Where(f => !Broken.ContainsKey(Relative(f))))
            {
                var dicom = DicomFile.Read(File.ReadAllBytes(file));
                var copy = Path.Combine(output.FullName, $"{written.Count:D3}.dcm");
                await File.WriteAllBytesAsync(copy, DicomWriter.ToBytes(dicom));
                originals.Add(file);
                written.Add(copy);
                ours[file] = Canonical(dicom.Dataset);
            }

            var (code, stdout, stderr) = await ExternalTool.RunAsync("/usr/bin/python3",
                [Path.Combine(TestData.RepoRoot, "tests", "tools", "dicom_values.py"), .. originals, .. written]);
            Assert.True(code == 0, stderr);
            var pydicom = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
                .Select(l => JsonDocument.Parse(l).RootElement)
                .ToDictionary(r => r.GetProperty("file").GetString()!);

            var differences = new List<string>();
            for (var i = 0; i < originals.Count; i++)
            {
                var name = Relative(originals[i]);
                var original = Values(pydicom[originals[i]], name);
                Compare($"{name} (ours vs pydicom)", original, ours[originals[i]], differences);
                Compare($"{name} (written, read by pydicom)", original, Values(pydicom[written[i]], name), differences);
            }
            Assert.True(differences.Count == 0, string.Join('\n', differences.Take(40)));

            // dcmtk reads every file we wrote without an error or a warning.
            var (dumpCode, _, dumpErrors) = await ExternalTool.RunAsync("dcmdump", ["-q", .. written]);
            Assert.True(dumpCode == 0 && dumpErrors.Length == 0, dumpErrors);
        }
        finally
        {
            output.Delete(recursive: true);
        }
    }

    [Fact]
    public void Truncated_and_corrupted_samples_are_refused_or_read_never_crash()
    {
        var random = new Random(20261123);
        var attempts = 0;
        foreach (var file in SampleFiles())
        {
            var bytes = File.ReadAllBytes(file);
            var cuts = Enumerable.Range(0, Math.Min(bytes.Length, 400))
                .Concat(Enumerable.Range(1, 63).Select(k => (int)((long)bytes.Length * k / 64)));
            foreach (var cut in cuts.Distinct())
            {
                TryRead(bytes.AsMemory(0, cut));
                attempts++;
            }
            for (var flip = 0; flip < 40; flip++)
            {
                var corrupt = (byte[])bytes.Clone();
                for (var n = 0; n < 4; n++) corrupt[random.Next(Math.Min(corrupt.Length, 4096))] = (byte)random.Next(256);
                TryRead(corrupt);
                attempts++;
            }
        }
        Assert.True(attempts > 50_000, $"{attempts} attempts");
    }

    private static void TryRead(ReadOnlyMemory<byte> bytes)
    {
        try
        {
            var file = DicomFile.Read(bytes);
            _ = DicomWriter.ToBytes(file);
        }
        catch (DicomException)
        {
            // refused with a reason: what broken input must get
        }
    }

    [Fact]
    public void Absurd_lengths_deep_nesting_and_deflate_bombs_are_refused_with_the_reason()
    {
        // A text element declaring 4 GB in a 20-byte file.
        var absurd = Explicit([Header(0x0010, 0x0010, "UT", 0xFFFF_FFF0)]);
        Assert.StartsWith("Truncated: (0010,0010)", Assert.Throws<DicomException>(() => DicomFile.Read(absurd)).Message);

        // 100 nested sequences of undefined length.
        var deep = new List<byte[]>();
        for (var i = 0; i < 100; i++) { deep.Add(Header(0x0040, 0xA730, "SQ", 0xFFFF_FFFF)); deep.Add(Item(0xE000, 0xFFFF_FFFF)); }
        Assert.Contains("nested deeper than 64", Assert.Throws<DicomException>(() => DicomFile.Read(Explicit(deep))).Message);

        // Unknown VR letters.
        var badVr = Explicit([Header(0x0010, 0x0010, "PN", 4), "Doe "u8.ToArray(), Header(0x0010, 0x0020, "QQ", 2), "12"u8.ToArray()]);
        Assert.StartsWith("Bad VR 0x5151 for (0010,0020)", Assert.Throws<DicomException>(() => DicomFile.Read(badVr)).Message);

        // 600 MiB of zeros compressed into a deflated file: refused once it passes the limit, without inflating it all.
        var compressed = new MemoryStream();
        using (var deflate = new System.IO.Compression.DeflateStream(compressed, System.IO.Compression.CompressionLevel.Fastest, leaveOpen: true))
        {
            var zeros = new byte[1 << 20];
            for (var i = 0; i < 600; i++) deflate.Write(zeros);
        }
        var bomb = Part10(TransferSyntaxes.DeflatedExplicitLittle, compressed.ToArray());
        Assert.Contains("inflates beyond 512 MiB", Assert.Throws<DicomException>(() => DicomFile.Read(bomb)).Message);

        // Not DICOM at all.
        Assert.StartsWith("Not DICOM", Assert.Throws<DicomException>(() => DicomFile.Read("%PDF-1.7 not an image at all"u8.ToArray())).Message);
    }

    [Fact]
    public void Specific_character_sets_decode_as_pydicom_reads_them()
    {
        // Expected names from pydicom's charset test files (charset_files/FileInfo.txt); the full value comparison
        // against pydicom covers every other text element.
        var expected = new Dictionary<string, string>
        {
            ["chrArab.dcm"] = "قباني^لنزار",
            ["chrGreek.dcm"] = "Διονυσιος",
            ["chrH31.dcm"] = "Yamada^Tarou=山田^太郎=やまだ^たろう",
            ["chrH32.dcm"] = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
            ["chrHbrw.dcm"] = "שרון^דבורה",
            ["chrI2.dcm"] = "Hong^Gildong=洪^吉洞=홍^길동",
            ["chrRuss.dcm"] = "Люкceмбypг",
            ["chrX1.dcm"] = "Wang^XiaoDong=王^小東",
            ["chrX2.dcm"] = "Wang^XiaoDong=王^小东",
            ["chrGerm.dcm"] = "Äneas^Rüdiger",
            ["chrKoreanMulti.dcm"] = "김희중",
            ["chrJapMulti.dcm"] = "やまだ^たろう",
        };
        foreach (var (name, patientName) in expected)
        {
            var file = DicomFile.Read(File.ReadAllBytes(Path.Combine(Dir, "pydicom", "charset_files", name)));
            Assert.Equal(patientName, file.Dataset.GetString(DicomTag.PatientName));
        }
    }

    [Fact]
    public void An_unmodified_data_set_round_trips_to_identical_elements()
    {
        foreach (var file in SampleFiles().Where(f => !Broken.ContainsKey(Relative(f))))
        {
            var first = DicomFile.Read(File.ReadAllBytes(file));
            var bytes = DicomWriter.ToBytes(first);
            var second = DicomFile.Read(bytes);
            Assert.Equal(Canonical(first.Dataset), Canonical(second.Dataset));
            Assert.Equal(bytes, DicomWriter.ToBytes(second)); // writing is deterministic: a fixed point after one pass
            Assert.Equal(TransferSyntaxes.IsEncapsulated(first.TransferSyntax) ? first.TransferSyntax : TransferSyntaxes.ExplicitLittle,
                second.Meta.GetString(DicomTag.TransferSyntaxUid));
        }
    }

    [Fact]
    public async Task Ward_dicom_dump_prints_the_elements_and_names_what_is_wrong_with_a_broken_file()
    {
        var (code, output) = await WardProcess.OutputAsync(["dicom", "dump", Path.Combine(Dir, "pydicom", "test_files", "CT_small.dcm")]);
        Assert.True(code == 0, output);
        Assert.Contains("(0010,0010) PN [CompressedSamples^CT1] PatientName", output);
        Assert.Contains("(0028,0010) US [128] Rows", output);
        Assert.Contains("  item 1", output);
        var (broken, message) = await WardProcess.OutputAsync(["dicom", "dump", Path.Combine(Dir, "pydicom", "test_files", "MR_truncated.dcm")]);
        Assert.Equal(2, broken);
        Assert.Contains("Truncated: (7FE0,0010) at offset 1488 declares 8192 bytes, 8130 remain.", message);
    }

    // ---- canonical values, the same rules as tests/tools/dicom_values.py ----

    internal static Dictionary<string, string> Canonical(DicomDataset dataset)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        Canonical(dataset, "", values);
        return values;
    }

    private static void Canonical(DicomDataset dataset, string prefix, Dictionary<string, string> values)
    {
        foreach (var element in dataset)
        {
            if (element.Tag.IsGroupLength) continue;
            var path = prefix + element.Tag.Hex;
            if (element.Items is { } items)
            {
                values[path] = $"items:{items.Count}";
                for (var i = 0; i < items.Count; i++) Canonical(items[i], $"{path}/{i}/", values);
            }
            else if (element.Fragments is { } fragments)
            {
                using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                var length = new byte[4];
                foreach (var fragment in fragments)
                {
                    BinaryPrimitives.WriteUInt32LittleEndian(length, (uint)fragment.Length);
                    hash.AppendData(length);
                    hash.AppendData(fragment.Span);
                }
                values[path] = $"fragments:{fragments.Count}:{Convert.ToHexStringLower(hash.GetHashAndReset())}";
            }
            else if (element.Tag.IsPrivate && !element.Tag.IsPrivateCreator)
            {
                values[path] = Hash(element.Value.Span);
            }
            else if (element.VR.UsesCharacterSet() || element.Tag.IsPrivateCreator)
            {
                values[path] = string.Join('\\', dataset.GetStrings(element.Tag));
            }
            else if (element.VR.IsText())
            {
                var text = Encoding.Latin1.GetString(element.Value.Span).TrimEnd(' ', '\0');
                values[path] = element.VR.IsSingleValuedText() ? text : string.Join('\\', text.Split('\\').Select(v => v.Trim(' ', '\0')));
            }
            else
            {
                values[path] = Hash(element.Value.Span);
            }
        }
    }

    /// <summary>Hash of a value padded to even length, as dicom_values.py computes it.</summary>
    private static string Hash(ReadOnlySpan<byte> value) =>
        "sha256:" + Convert.ToHexStringLower(SHA256.HashData(value.Length % 2 == 1 ? [.. value, 0] : value));

    private static Dictionary<string, string> Values(JsonElement reading, string name)
    {
        Assert.False(reading.TryGetProperty("error", out var error), $"pydicom could not read {name}: {error}");
        return reading.GetProperty("values").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!, StringComparer.Ordinal);
    }

    private static void Compare(string what, Dictionary<string, string> expected, Dictionary<string, string> actual, List<string> differences)
    {
        foreach (var (path, value) in expected)
        {
            if (!actual.TryGetValue(path, out var other)) differences.Add($"{what}: {path} missing (expected {Short(value)})");
            else if (other != value) differences.Add($"{what}: {path} is {Short(other)}, expected {Short(value)}");
        }
        foreach (var path in actual.Keys.Except(expected.Keys)) differences.Add($"{what}: {path} unexpected ({Short(actual[path])})");
    }

    private static string Short(string value) => value.Length > 60 ? value[..60] + "…" : value;

    private static string SyntaxName(DicomFile file) =>
        !file.Meta.Contains(DicomTag.TransferSyntaxUid) ? "no-meta" : file.TransferSyntax switch
        {
            TransferSyntaxes.ImplicitLittle => "Implicit VR Little Endian",
            TransferSyntaxes.ExplicitLittle => "Explicit VR Little Endian",
            TransferSyntaxes.ExplicitBig => "Explicit VR Big Endian",
            TransferSyntaxes.DeflatedExplicitLittle => "Deflated Explicit VR Little Endian",
            "1.2.840.10008.1.2.4.50" => "JPEG Baseline (Process 1)",
            "1.2.840.10008.1.2.4.51" => "JPEG Extended (Process 2 and 4)",
            "1.2.840.10008.1.2.4.70" => "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
            "1.2.840.10008.1.2.4.80" => "JPEG-LS Lossless Image Compression",
            "1.2.840.10008.1.2.4.81" => "JPEG-LS Lossy (Near-Lossless) Image Compression",
            "1.2.840.10008.1.2.4.90" => "JPEG 2000 Image Compression (Lossless Only)",
            "1.2.840.10008.1.2.4.91" => "JPEG 2000 Image Compression",
            "1.2.840.10008.1.2.5" => "RLE Lossless",
            var other => other,
        };

    private static int Depth(DicomDataset dataset) =>
        dataset.Where(e => e.Items is not null).Select(e => 1 + e.Items!.Select(Depth).DefaultIfEmpty(0).Max()).DefaultIfEmpty(0).Max();

    // ---- hand-made inputs ----

    private static byte[] Header(ushort group, ushort element, string vr, uint length)
    {
        var longForm = vr is "OB" or "OW" or "SQ" or "UN" or "UT" or "UC" or "UR";
        var header = new byte[longForm ? 12 : 8];
        BinaryPrimitives.WriteUInt16LittleEndian(header, group);
        BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(2), element);
        header[4] = (byte)vr[0];
        header[5] = (byte)vr[1];
        if (longForm) BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(8), length);
        else BinaryPrimitives.WriteUInt16LittleEndian(header.AsSpan(6), (ushort)length);
        return header;
    }

    private static byte[] Item(ushort element, uint length)
    {
        var item = new byte[8];
        BinaryPrimitives.WriteUInt16LittleEndian(item, 0xFFFE);
        BinaryPrimitives.WriteUInt16LittleEndian(item.AsSpan(2), element);
        BinaryPrimitives.WriteUInt32LittleEndian(item.AsSpan(4), length);
        return item;
    }

    private static byte[] Explicit(IEnumerable<byte[]> parts) => Part10(TransferSyntaxes.ExplicitLittle, [.. parts.SelectMany(p => p)]);

    private static byte[] Part10(string syntax, byte[] body)
    {
        var uid = Encoding.ASCII.GetBytes(syntax.Length % 2 == 1 ? syntax + "\0" : syntax);
        return [.. new byte[128], .. "DICM"u8, .. Header(0x0002, 0x0010, "UI", (uint)uid.Length), .. uid, .. body];
    }
}
