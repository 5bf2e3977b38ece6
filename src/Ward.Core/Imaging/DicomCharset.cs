using System.Text;

namespace Ward.Core.Imaging;

/// <summary>
/// Decodes text values under a Specific Character Set (0008,0005), PS3.3 C.12.1.1.2 and PS3.5 section 6.1: single-byte
/// sets (ISO_IR 100 …), UTF-8 (ISO_IR 192), GB18030 and GBK, and the ISO 2022 code extensions (escape sequences
/// switching between ASCII, Latin/Cyrillic/Greek/Arabic/Hebrew/Thai, JIS X 0201/0208/0212, KS X 1001 and GB 2312).
/// Decoding never fails: bytes a set cannot map become U+FFFD.
/// </summary>
internal sealed class DicomCharset
{
    static DicomCharset() => Encoding.RegisterProvider(CodePagesEncodingProvider.Instance);

    public static readonly DicomCharset Default = new(Encoding.Latin1, []);

    private readonly Encoding initial; // the first term's set, in force at the start of each value and after delimiters
    private readonly string[] terms;

    private DicomCharset(Encoding initial, string[] terms)
    {
        this.initial = initial;
        this.terms = terms;
    }

    public bool UsesCodeExtensions => terms.Length > 1 || (terms.Length == 1 && terms[0].StartsWith("ISO 2022", StringComparison.Ordinal));

    /// <summary>The character set named by the (possibly multi-valued) Specific Character Set element.</summary>
    public static DicomCharset Of(IReadOnlyList<string> values)
    {
        if (values.Count == 0 || (values.Count == 1 && values[0].Length == 0)) return Default;
        var first = values[0].Trim();
        // An unknown term decodes as Latin-1 rather than failing: the bytes stay as they are in the stored file.
        var encoding = first.Length == 0 ? Encoding.ASCII : Single(first) ?? Encoding.Latin1;
        return new DicomCharset(encoding, [.. values.Select(v => v.Trim())]);
    }

    /// <summary>The encoding of a defined term without code extensions, or of the ISO 2022 term's set.</summary>
    private static Encoding? Single(string term) => term switch
    {
        "ISO_IR 6" or "ISO 2022 IR 6" => Encoding.ASCII,
        "ISO_IR 100" or "ISO 2022 IR 100" => Encoding.Latin1,
        "ISO_IR 101" or "ISO 2022 IR 101" => Encoding.GetEncoding(28592),
        "ISO_IR 109" or "ISO 2022 IR 109" => Encoding.GetEncoding(28593),
        "ISO_IR 110" or "ISO 2022 IR 110" => Encoding.GetEncoding(28594),
        "ISO_IR 144" or "ISO 2022 IR 144" => Encoding.GetEncoding(28595),
        "ISO_IR 127" or "ISO 2022 IR 127" => Encoding.GetEncoding(28596),
        "ISO_IR 126" or "ISO 2022 IR 126" => Encoding.GetEncoding(28597),
        "ISO_IR 138" or "ISO 2022 IR 138" => Encoding.GetEncoding(28598),
        "ISO_IR 148" or "ISO 2022 IR 148" => Encoding.GetEncoding(28599),
        "ISO_IR 203" or "ISO 2022 IR 203" => Encoding.GetEncoding(28605),
        "ISO_IR 166" or "ISO 2022 IR 166" => Encoding.GetEncoding(874),
        "ISO_IR 13" or "ISO 2022 IR 13" => Encoding.GetEncoding(932),
        "ISO_IR 192" => Encoding.UTF8,
        "GB18030" => Encoding.GetEncoding(54936),
        "GBK" => Encoding.GetEncoding(936),
        "ISO 2022 IR 87" => Encoding.GetEncoding(50220),
        "ISO 2022 IR 159" => Encoding.GetEncoding(20932),
        "ISO 2022 IR 149" => Encoding.GetEncoding(51949),
        "ISO 2022 IR 58" => Encoding.GetEncoding(936),
        _ => null,
    };

    public string Decode(ReadOnlySpan<byte> bytes, DicomVR vr)
    {
        if (!vr.UsesCharacterSet()) return Encoding.Latin1.GetString(bytes);
        if (!UsesCodeExtensions || bytes.IndexOf((byte)0x1B) < 0) return initial.GetString(bytes);
        return DecodeExtended(bytes, vr);
    }

    /// <summary>
    /// ISO 2022: split at escape sequences and decode each run with the set the sequence designates. The sets in force
    /// return to the initial ones after each delimiter (^ and = in person names; CR, LF, FF, TAB and \ in text).
    /// </summary>
    private string DecodeExtended(ReadOnlySpan<byte> bytes, DicomVR vr)
    {
        var text = new StringBuilder(bytes.Length);
        var current = initial;
        var start = 0;
        var i = 0;
        while (i < bytes.Length)
        {
            var b = bytes[i];
            if (b == 0x1B)
            {
                Append(text, current, bytes[start..i]);
                var (length, next) = Escape(bytes[i..]);
                if (length == 0) { text.Append('\uFFFD'); i++; start = i; continue; }
                if (next.CodePage == 50220)
                {
                    // JIS X 0208 decodes with its escape through the ISO-2022-JP codec, up to the next escape.
                    var end = bytes[(i + length)..].IndexOf((byte)0x1B);
                    var stop = end < 0 ? bytes.Length : i + length + end;
                    text.Append(next.GetString(bytes[i..stop]));
                    i = start = stop;
                    current = initial;
                    continue;
                }
                current = next;
                i += length;
                start = i;
                continue;
            }
            if (IsDelimiter(b, vr))
            {
                Append(text, current, bytes[start..i]);
                text.Append((char)b);
                current = initial;
                start = ++i;
                continue;
            }
            i++;
        }
        Append(text, current, bytes[start..]);
        return text.ToString();
    }

    private static bool IsDelimiter(byte b, DicomVR vr) =>
        vr == DicomVR.PN ? b is (byte)'^' or (byte)'=' : b is 0x0D or 0x0A or 0x0C or 0x09 or (byte)'\\';

    private static void Append(StringBuilder text, Encoding encoding, ReadOnlySpan<byte> run)
    {
        if (run.IsEmpty) return;
        if (encoding.CodePage == 20932)
        {
            // JIS X 0212 in 7-bit form: EUC-JP writes each two-byte character as 0x8F, b1 | 0x80, b2 | 0x80.
            var euc = new byte[run.Length / 2 * 3];
            for (int s = 0, d = 0; s + 1 < run.Length; s += 2)
            {
                euc[d++] = 0x8F; euc[d++] = (byte)(run[s] | 0x80); euc[d++] = (byte)(run[s + 1] | 0x80);
            }
            text.Append(encoding.GetString(euc));
            return;
        }
        text.Append(encoding.GetString(run));
    }

    /// <summary>The escape sequence's length and the set it designates (PS3.3 tables C.12-3 and C.12-4); length 0 if unknown.</summary>
    private static (int Length, Encoding Encoding) Escape(ReadOnlySpan<byte> s)
    {
        if (s.Length >= 3)
        {
            switch ((s[1], s[2]))
            {
                case ((byte)'(', (byte)'B'): return (3, Encoding.ASCII);
                case ((byte)'(', (byte)'J'): return (3, Encoding.ASCII);      // JIS X 0201 Romaji
                case ((byte)')', (byte)'I'): return (3, Encoding.GetEncoding(932)); // JIS X 0201 Katakana
                case ((byte)'$', (byte)'B'): return (3, Encoding.GetEncoding(50220)); // JIS X 0208
                case ((byte)'-', var f):
                    var set = f switch
                    {
                        (byte)'A' => Encoding.Latin1, (byte)'B' => Encoding.GetEncoding(28592),
                        (byte)'C' => Encoding.GetEncoding(28593), (byte)'D' => Encoding.GetEncoding(28594),
                        (byte)'L' => Encoding.GetEncoding(28595), (byte)'G' => Encoding.GetEncoding(28596),
                        (byte)'F' => Encoding.GetEncoding(28597), (byte)'H' => Encoding.GetEncoding(28598),
                        (byte)'M' => Encoding.GetEncoding(28599), (byte)'b' => Encoding.GetEncoding(28605),
                        (byte)'T' => Encoding.GetEncoding(874), _ => null,
                    };
                    return set is null ? (0, Encoding.ASCII) : (3, set);
            }
        }
        if (s.Length >= 4 && s[1] == '$')
        {
            switch ((s[2], s[3]))
            {
                case ((byte)'(', (byte)'D'): return (4, Encoding.GetEncoding(20932)); // JIS X 0212
                case ((byte)')', (byte)'C'): return (4, Encoding.GetEncoding(51949)); // KS X 1001
                case ((byte)')', (byte)'A'): return (4, Encoding.GetEncoding(936));   // GB 2312
            }
        }
        return (0, Encoding.ASCII);
    }
}
