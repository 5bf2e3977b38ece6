using System.Text;

namespace Ward.Core.Privacy;

/// <summary>
/// CSV as RFC 4180 writes it, with any one-character separator: fields may be quoted, a quoted field may hold the
/// separator, line breaks and doubled quotes. Written fields are quoted only when they need it.
/// </summary>
internal static class Csv
{
    /// <summary>The records of a file, each as its fields (blank lines skipped).</summary>
    public static IEnumerable<string[]> Read(string path, char separator)
    {
        using var reader = new StreamReader(path, Encoding.UTF8);
        var fields = new List<string>();
        var field = new StringBuilder();
        var line = 1;
        while (reader.Peek() >= 0)
        {
            fields.Clear();
            var start = line;
            while (true)
            {
                field.Clear();
                var c = reader.Read();
                if (c == '"')
                {
                    while (true)
                    {
                        c = reader.Read();
                        if (c < 0)
                        {
                            throw new PrivacyException($"{Path.GetFileName(path)}, line {start}: a quoted field is not closed.");
                        }
                        if (c == '"')
                        {
                            if (reader.Peek() != '"')
                            {
                                break;
                            }
                            reader.Read();
                        }
                        else if (c == '\n')
                        {
                            line++;
                        }
                        field.Append((char)c);
                    }
                    c = reader.Read();
                    if (c >= 0 && c != separator && c != '\n' && c != '\r')
                    {
                        throw new PrivacyException($"{Path.GetFileName(path)}, line {line}: text after a closing quote.");
                    }
                }
                else
                {
                    while (c >= 0 && c != separator && c != '\n' && c != '\r')
                    {
                        field.Append((char)c);
                        c = reader.Read();
                    }
                }
                fields.Add(field.ToString());
                if (c == '\r' && reader.Peek() == '\n')
                {
                    c = reader.Read();
                }
                if (c != separator)
                {
                    line++;
                    break;
                }
            }
            if (fields.Count > 1 || fields[0].Length > 0)
            {
                yield return [.. fields];
            }
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
