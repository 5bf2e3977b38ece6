using QRCoder;

namespace Ward.Server.Identity;

/// <summary>How an authenticator app learns a TOTP key (RFC 6238, SHA-1, 6 digits, 30 s: what every app supports).</summary>
internal static class Totp
{
    private const string Issuer = "Ward";

    /// <summary>The key-uri of Google Authenticator's format, understood by every authenticator app.</summary>
    public static string Uri(string userName, string base32Key) =>
        $"otpauth://totp/{System.Uri.EscapeDataString(Issuer)}:{System.Uri.EscapeDataString(userName)}?secret={base32Key}&issuer={System.Uri.EscapeDataString(Issuer)}&digits=6&period=30";

    /// <summary>The key in groups of four, easier to type.</summary>
    public static string Group(string base32Key) =>
        string.Join(' ', Enumerable.Range(0, (base32Key.Length + 3) / 4).Select(i => base32Key.Substring(i * 4, Math.Min(4, base32Key.Length - i * 4)))).ToLowerInvariant();

    public static string QrSvg(string uri)
    {
        using var data = QRCodeGenerator.GenerateQrCode(uri, QRCodeGenerator.ECCLevel.M);
        return new SvgQRCode(data).GetGraphic(4).Replace("<svg ", "<svg role=\"img\" aria-label=\"QR code\" ", StringComparison.Ordinal);
    }

    /// <summary>A QR code drawn with half-block characters, for a terminal.</summary>
    public static string QrText(string uri)
    {
        using var data = QRCodeGenerator.GenerateQrCode(uri, QRCodeGenerator.ECCLevel.L);
        return new AsciiQRCode(data).GetGraphicSmall(drawQuietZones: true, invert: false, endOfLine: "\n");
    }
}
