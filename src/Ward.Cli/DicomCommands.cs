using System.CommandLine;
using System.Globalization;
using System.Text;
using Ward.Core.Imaging;

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
            var read = DicomFile.Read(File.ReadAllBytes(path));
            var text = new StringBuilder();
            text.Append(CultureInfo.InvariantCulture, $"# transfer syntax {read.TransferSyntax}\n");
            Dump(read.Meta, 0, text);
            Dump(read.Dataset, 0, text);
            Console.Out.Write(text);
            return 0;
        }));
        dicom.Add(dump);
        return dicom;
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
            else if (element.VR.IsText() && !element.Tag.IsPrivate || element.Tag.IsPrivateCreator) value = $"[{dataset.GetString(element.Tag)}]";
            else value = $"({element.Value.Length} bytes)";
            if (value.Length > 80) value = value[..79] + "…";
            text.Append(CultureInfo.InvariantCulture, $"{indent}{element.Tag} {element.VR.Name()} {value} {keyword}\n");
        }
    }
}
