using System.Buffers.Binary;
using System.CommandLine;
using System.Globalization;
using System.Text;
using Ward.Core.Imaging;
using Ward.Core.Node;

namespace Ward.Cli;

/// <summary><c>ward dicom</c>: DICOM files on the command line (dump; de-identification).</summary>
internal static partial class Commands
{
    private static Command DicomCommand()
    {
        var dicom = new Command("dicom", "DICOM Part 10 files: inspect and de-identify.");
        var file = new Argument<string>("file") { Description = "A DICOM file (with or without preamble; any transfer syntax Ward reads)." };
        var dump = new Command("dump", "Prints the file's elements, one per line (tag, VR, value, keyword), sequences indented. Exit 2 if the file is refused, with the reason.") { file };
        dump.SetAction(pr => Run(() =>
        {
            var path = pr.GetValue(file)!;
            var read = DicomFile.Read(File.ReadAllBytes(InputFile(path, "DICOM")));
            var text = new StringBuilder();
            text.Append(CultureInfo.InvariantCulture, $"# transfer syntax {read.TransferSyntax}\n");
            Dump(read.Meta, 0, text);
            Dump(read.Dataset, 0, text);
            Console.Out.Write(text);
            return 0;
        }));
        dicom.Add(dump);
        dicom.Add(DeidCommand());
        return dicom;
    }

    private static Command DeidCommand()
    {
        var input = new Argument<string>("in") { Description = "A DICOM file, or a folder of them (read recursively)." };
        var output = new Argument<string>("out") { Description = "The de-identified file, or for a folder input a folder (files named by their new SOP Instance UID)." };
        var option = new Option<string[]>("--option")
        {
            Description = "A PS3.15 profile option (repeatable): " + string.Join(", ", DicomDeidentifier.Options.Select(o => o.Flag)) + ".",
            AllowMultipleArgumentsPerToken = true,
        };
        option.AcceptOnlyFromAmong([.. DicomDeidentifier.Options.Select(o => o.Flag)]);
        var keyFile = new Option<string?>("--key-file")
        {
            Description = "A secret of at least 16 bytes: the same key maps the same UIDs (and shifts a patient's dates) the same way across runs. Without it, a random key for this run only.",
        };
        var safePrivate = new Option<string?>("--safe-private")
        {
            Description = "With --option retain-safe-private: a file of safe private attributes, one per line: GGGG<TAB>EE<TAB>private creator (EE: the element within the block).",
        };
        var allowBurnedIn = new Option<bool>("--allow-burned-in")
        {
            Description = "Release instances that may carry burned-in annotation (ultrasound, captures …) after you have checked their pixels yourself.",
        };
        var deid = new Command("deid", "De-identifies DICOM instances by PS3.15 Table E.1-1 (Basic Application Level Confidentiality Profile, rev 2024b) and the options given. Exit 0 when every instance was released, 1 when some were refused (burned-in annotation) or unreadable, 2 on usage errors.")
        {
            input, output, option, keyFile, safePrivate, allowBurnedIn,
        };
        deid.SetAction(pr => Run(() =>
        {
            var chosen = DicomDeidentifier.Options.Where(o => (pr.GetValue(option) ?? []).Contains(o.Flag)).Aggregate(DeidOptions.None, (all, o) => all | o.Option);
            if (chosen.HasFlag(DeidOptions.RetainFullDates) && chosen.HasFlag(DeidOptions.ModifyDates))
                throw new NodeException("Choose at most one of --option retain-full-dates and --option modify-dates.");
            var key = pr.GetValue(keyFile) is { } path
                ? File.Exists(path) ? File.ReadAllBytes(path) : throw new NodeException($"No key file at {path}.")
                : System.Security.Cryptography.RandomNumberGenerator.GetBytes(32);
            if (key.Length < 16) throw new NodeException("The key file must hold at least 16 bytes.");
            var safe = pr.GetValue(safePrivate) is { } list ? ReadSafePrivate(list) : [];
            var deidentifier = new DicomDeidentifier(chosen, key, pr.GetValue(allowBurnedIn), safe);

            var source = pr.GetValue(input)!;
            var target = pr.GetValue(output)!;
            var folder = Directory.Exists(source);
            if (!folder && !File.Exists(source)) throw new NodeException($"No file or folder at {source}.");
            var files = folder ? Directory.EnumerateFiles(source, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList() : [source];
            if (folder) Directory.CreateDirectory(target);
            int released = 0, refused = 0;
            foreach (var file in files)
            {
                var name = folder ? Path.GetRelativePath(source, file) : Path.GetFileName(file);
                try
                {
                    var clean = deidentifier.Deidentify(DicomFile.Read(File.ReadAllBytes(file)));
                    var destination = folder ? Path.Combine(target, (clean.Dataset.GetString(DicomTag.SopInstanceUid) ?? $"instance-{released}") + ".dcm") : target;
                    File.WriteAllBytes(destination, DicomWriter.ToBytes(clean));
                    released++;
                }
                catch (Exception e) when (e is DicomException or DeidentificationRefused)
                {
                    refused++;
                    Console.Error.WriteLine($"{Safe(name)}: {(e is DicomException ? "unreadable" : "refused")}: {Safe(e.Message)}");
                }
            }
            Console.Out.WriteLine($"{released} instance(s) de-identified, {refused} refused or unreadable" +
                (pr.GetValue(keyFile) is null ? " (random key: UIDs are consistent within this run only)." : "."));
            return refused == 0 ? 0 : 1;
        }));
        return deid;
    }

    private static List<(string, ushort, byte)> ReadSafePrivate(string path)
    {
        if (!File.Exists(path)) throw new NodeException($"No safe private attribute list at {path}.");
        var entries = new List<(string, ushort, byte)>();
        foreach (var (line, number) in File.ReadLines(path).Select((l, i) => (l, i + 1)))
        {
            if (line.Length == 0 || line[0] == '#') continue;
            var parts = line.Split('\t');
            if (parts.Length != 3 || !ushort.TryParse(parts[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var group)
                || !byte.TryParse(parts[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var element) || (group & 1) == 0)
                throw new NodeException($"{path}, line {number}: expected GGGG<TAB>EE<TAB>creator with an odd group.");
            entries.Add((parts[2].Trim(), group, element));
        }
        return entries;
    }

    /// <summary>The numbers of a short binary value, separated by backslashes as DICOM writes multiple values.</summary>
    private static string Numbers(DicomElement element)
    {
        var span = element.Value.Span;
        var size = element.VR.WordSize();
        var values = new List<string>();
        for (var i = 0; i + size <= span.Length; i += size)
        {
            var word = span[i..];
            values.Add(element.VR switch
            {
                DicomVR.US => BinaryPrimitives.ReadUInt16LittleEndian(word).ToString(CultureInfo.InvariantCulture),
                DicomVR.SS => BinaryPrimitives.ReadInt16LittleEndian(word).ToString(CultureInfo.InvariantCulture),
                DicomVR.UL => BinaryPrimitives.ReadUInt32LittleEndian(word).ToString(CultureInfo.InvariantCulture),
                DicomVR.SL => BinaryPrimitives.ReadInt32LittleEndian(word).ToString(CultureInfo.InvariantCulture),
                DicomVR.FL => BinaryPrimitives.ReadSingleLittleEndian(word).ToString(CultureInfo.InvariantCulture),
                _ => BinaryPrimitives.ReadDoubleLittleEndian(word).ToString(CultureInfo.InvariantCulture),
            });
        }
        return string.Join('\\', values);
    }

    private static void Dump(DicomDataset dataset, int depth, StringBuilder text)
    {
        var indent = new string(' ', depth * 2);
        foreach (var element in dataset)
        {
            var keyword = DicomDictionary.Keyword(element.Tag);
            if (element.Items is { } items)
            {
                text.Append(CultureInfo.InvariantCulture, $"{indent}{element.Tag} SQ ({items.Count} items) {keyword}\n");
                for (var i = 0; i < items.Count; i++)
                {
                    text.Append(CultureInfo.InvariantCulture, $"{indent}  item {i + 1}\n");
                    Dump(items[i], depth + 2, text);
                }
                continue;
            }
            string value;
            if (element.Fragments is { } fragments) value = $"({fragments.Count} fragments, {fragments.Sum(f => (long)f.Length)} bytes)";
            else if (element.VR.IsText() && !element.Tag.IsPrivate || element.Tag.IsPrivateCreator) value = $"[{Safe(dataset.GetString(element.Tag))}]";
            else if (element.VR is DicomVR.US or DicomVR.SS or DicomVR.UL or DicomVR.SL or DicomVR.FL or DicomVR.FD && element.Value.Length <= 64) value = $"[{Numbers(element)}]";
            else value = $"({element.Value.Length} bytes)";
            if (value.Length > 80) value = value[..79] + "…";
            text.Append(CultureInfo.InvariantCulture, $"{indent}{element.Tag} {element.VR.Name()} {value} {keyword}\n");
        }
    }
}
