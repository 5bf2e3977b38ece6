using System.Text;

namespace Ward.Core.Privacy;

/// <summary>
/// CSV as RFC 4180 writes it, with any one-character separator: fields may be quoted, a quoted field may hold the
/// separator, line breaks (read back as <c>\n</c>) and doubled quotes. Written fields are quoted only when they need it.
/// </summary>
internal static class Csv
{
    /// <summary>The records of a file, each as its fields (blank lines skipped).</summary>
    public static IEnumerable<string[]> Read(string path, char separator)
    {
        if (!File.Exists(path))
        {
            throw new PrivacyException(Directory.Exists(path) ? $"{path} is a folder: give a CSV file." : $"No CSV file at {path}.");
        }
        using var reader = new StreamReader(path, Encoding.UTF8);
        foreach (var record in Read(reader, separator, Path.GetFileName(path))) yield return record;
    }

    /// <summary>The records read from <paramref name="reader"/>; <paramref name="name"/> names the source in errors.</summary>
    public static IEnumerable<string[]> Read(TextReader reader, char separator, string name)
    {
        var number = 0;
        while (reader.ReadLine() is { } line)
        {
            number++;
            if (line.Length == 0)
            {
                continue;
            }
            if (!line.Contains('"', StringComparison.Ordinal))
            {
                yield return line.Split(separator);
                continue;
            }
            // A quoted field may go on over the next lines: an odd number of quotes means one is still open.
            var start = number;
            var text = new StringBuilder(line);
            while (text.ToString().Count(c => c == '"') % 2 == 1)
            {
                var next = reader.ReadLine() ?? throw new PrivacyException($"{name}, line {start}: a quoted field is not closed.");
                number++;
                text.Append('\n').Append(next);
            }
            yield return Fields(text.ToString(), separator, name, start);
        }
    }

    private static string[] Fields(string text, char separator, string file, int line)
    {
        var fields = new List<string>();
        var field = new StringBuilder();
        var i = 0;
        while (true)
        {
            field.Clear();
            if (i < text.Length && text[i] == '"')
            {
                i++;
                while (true)
                {
                    if (text[i] == '"')
                    {
                        if (i + 1 < text.Length && text[i + 1] == '"')
                        {
                            field.Append('"');
                            i += 2;
                            continue;
                        }
                        i++;
                        break;
                    }
                    field.Append(text[i++]);
                }
                if (i < text.Length && text[i] != separator)
                {
                    throw new PrivacyException($"{file}, line {line}: text after a closing quote.");
                }
            }
            else
            {
                var end = text.IndexOf(separator, i);
                end = end < 0 ? text.Length : end;
                field.Append(text, i, end - i);
                i = end;
            }
            fields.Add(field.ToString());
            if (i >= text.Length)
            {
                return [.. fields];
            }
            i++; // the separator
        }
    }

    /// <summary>One record as a line (without the line break), quoting the fields that hold the separator, a quote or a line break.</summary>
    public static string Line(IEnumerable<string> fields, char separator)
    {
        var line = new StringBuilder();
        var first = true;
        foreach (var f in fields)
        {
            if (!first)
            {
                line.Append(separator);
            }
            first = false;
            if (f.AsSpan().IndexOfAny([separator, '"', '\n', '\r']) >= 0)
            {
                line.Append('"').Append(f.Replace("\"", "\"\"", StringComparison.Ordinal)).Append('"');
            }
            else
            {
                line.Append(f);
            }
        }
        return line.ToString();
    }
}
