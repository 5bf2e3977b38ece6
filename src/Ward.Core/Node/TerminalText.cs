using System.Globalization;
using System.Text;

namespace Ward.Core.Node;

/// <summary>
/// Text that came from a caller (a break-the-glass justification, a user name, a review note, a reason, an error message
/// quoting input) made safe to print on a terminal or in a log line: control characters (ESC and so ANSI sequences, CR
/// and LF that would forge a line, NUL, DEL, the C1 controls), the bidirectional overrides and isolates (U+202E and its
/// kin, which reorder what a reader sees), the line and paragraph separators and unpaired surrogates are written as
/// visible escapes (<c>\x1b</c>, <c>\n</c>, <c>\u202E</c>); everything else, letters of any script included, is unchanged.
/// </summary>
internal static class TerminalText
{
    /// <summary>The text with every character a terminal or a log reader would act on written as a visible escape.</summary>
    public static string Escape(string? text)
    {
        if (string.IsNullOrEmpty(text))
        {
            return text ?? "";
        }
        var at = 0;
        while (at < text.Length && !Unsafe(text, at))
        {
            at++;
        }
        if (at == text.Length)
        {
            return text;
        }
        var escaped = new StringBuilder(text.Length + 16).Append(text, 0, at);
        for (; at < text.Length; at++)
        {
            var c = text[at];
            if (!Unsafe(text, at))
            {
                escaped.Append(c);
                if (char.IsHighSurrogate(c))
                {
                    escaped.Append(text[++at]);
                }
                continue;
            }
            escaped.Append(c switch
            {
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                < '\u0100' => "\\x" + ((int)c).ToString("x2", CultureInfo.InvariantCulture),
                _ => "\\u" + ((int)c).ToString("X4", CultureInfo.InvariantCulture),
            });
        }
        return escaped.ToString();
    }

    /// <summary>
    /// A message of several lines (the node's own line breaks, with caller text inside): each line escaped as by
    /// <see cref="Escape"/>, and every line after the first indented, so that no line a caller slipped in can pass for
    /// the start of another message.
    /// </summary>
    public static string EscapeLines(string? text) =>
        string.Join('\n', (text ?? "").Split('\n').Select((line, i) => i == 0 || line.StartsWith(' ') ? Escape(line) : "  " + Escape(line)));

    private static bool Unsafe(string text, int at)
    {
        var c = text[at];
        if (char.IsHighSurrogate(c))
        {
            return at + 1 >= text.Length || !char.IsLowSurrogate(text[at + 1]);
        }
        if (char.IsLowSurrogate(c))
        {
            return at == 0 || !char.IsHighSurrogate(text[at - 1]);
        }
        return c < ' ' || c is >= '\u007f' and <= '\u009f'
            || c is '\u061c' or '\u200e' or '\u200f' or (>= '\u202a' and <= '\u202e') or (>= '\u2066' and <= '\u2069') or '\u2028' or '\u2029';
    }
}
