using System.Globalization;
using System.Text;

namespace Ward.Core.Search;

/// <summary>Normalisation and range arithmetic shared by indexing and searching, so both sides agree by construction.</summary>
internal static class SearchValues
{
    /// <summary>Case- and accent-insensitive form used for string search (FHIR: "ignoring case and accents").</summary>
    public static string Normalize(string value)
    {
        var trimmed = value.Trim();
        var ascii = true;
        foreach (var c in trimmed)
        {
            if (c > 0x7f)
            {
                ascii = false;
                break;
            }
        }
        if (ascii)
        {
            return trimmed.ToLowerInvariant();
        }
        var decomposed = trimmed.Normalize(NormalizationForm.FormD);
        var sb = new StringBuilder(decomposed.Length);
        foreach (var c in decomposed)
        {
            if (CharUnicodeInfo.GetUnicodeCategory(c) != UnicodeCategory.NonSpacingMark)
            {
                sb.Append(char.ToLowerInvariant(c));
            }
        }
        return sb.ToString().Normalize(NormalizationForm.FormC);
    }

    /// <summary>
    /// Parses a FHIR date, dateTime or instant (any precision) into the closed range of ticks (UTC) that it covers.
    /// A time without a zone is read as UTC.
    /// </summary>
    public static bool TryParseDateRange(string text, out long lo, out long hi)
    {
        lo = hi = 0;
        var s = text.Trim();
        if (s.Length < 4 || !int.TryParse(s.AsSpan(0, 4), NumberStyles.None, CultureInfo.InvariantCulture, out var year) || year < 1)
        {
            return false;
        }
        if (s.Length == 4)
        {
            return Range(new DateTime(year, 1, 1, 0, 0, 0, DateTimeKind.Utc), d => d.AddYears(1), out lo, out hi);
        }
        if (s.Length == 7 && s[4] == '-' && int.TryParse(s.AsSpan(5, 2), NumberStyles.None, CultureInfo.InvariantCulture, out var month) && month is >= 1 and <= 12)
        {
            return Range(new DateTime(year, month, 1, 0, 0, 0, DateTimeKind.Utc), d => d.AddMonths(1), out lo, out hi);
        }
        if (s.Length == 10)
        {
            if (!DateTime.TryParseExact(s, "yyyy-MM-dd", CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var day))
            {
                return false;
            }
            return Range(DateTime.SpecifyKind(day, DateTimeKind.Utc), d => d.AddDays(1), out lo, out hi);
        }
        if (s.Length > 10 && s[10] == 'T')
        {
            var timePart = s[11..];
            var zoneAt = timePart.IndexOfAny(['Z', '+', '-']);
            var clock = zoneAt >= 0 ? timePart[..zoneAt] : timePart;
            var zone = zoneAt >= 0 ? timePart[zoneAt..] : "Z";
            TimeSpan step;
            string format;
            switch (clock.Length)
            {
                case 5: format = "HH:mm"; step = TimeSpan.FromMinutes(1); break;
                case 8: format = "HH:mm:ss"; step = TimeSpan.FromSeconds(1); break;
                case > 9 when clock[8] == '.':
                    var digits = Math.Min(clock.Length - 9, 7);
                    clock = clock[..(9 + digits)];
                    format = "HH:mm:ss." + new string('f', digits);
                    step = TimeSpan.FromTicks((long)Math.Pow(10, 7 - digits));
                    break;
                default: return false;
            }
            if (!DateTimeOffset.TryParseExact(s[..10] + "T" + clock + (zone == "Z" ? "+00:00" : zone), "yyyy-MM-dd'T'" + format + "zzz",
                    CultureInfo.InvariantCulture, DateTimeStyles.None, out var instant))
            {
                return false;
            }
            var start = instant.UtcDateTime;
            lo = start.Ticks;
            hi = start.Ticks + step.Ticks - 1;
            return true;
        }
        return false;
    }

    private static bool Range(DateTime start, Func<DateTime, DateTime> next, out long lo, out long hi)
    {
        lo = start.Ticks;
        try
        {
            hi = next(start).Ticks - 1;
        }
        catch (ArgumentOutOfRangeException)
        {
            hi = DateTime.MaxValue.Ticks;
        }
        return true;
    }

    /// <summary>The implicit range of a decimal search value: half a unit of its last significant digit either side.</summary>
    public static (double Lo, double Hi) NumberRange(decimal value)
    {
        var scale = value.Scale;
        var half = 0.5m / Pow10(scale);
        return ((double)(value - half), (double)(value + half));
    }

    private static decimal Pow10(int n)
    {
        var r = 1m;
        for (var i = 0; i < n; i++)
        {
            r *= 10;
        }
        return r;
    }

    public static bool TryParseDecimal(string text, out decimal value) =>
        decimal.TryParse(text, NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint | NumberStyles.AllowExponent, CultureInfo.InvariantCulture, out value);
}
