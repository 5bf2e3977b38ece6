using System.Text.Json;
using Ward.Core.Audit;

namespace Ward.Tests;

/// <summary>C2SP signed notes and checkpoints against the vectors of golang.org/x/mod/sumdb/note and the C2SP specs.</summary>
public class SignedNoteTests
{
    private static readonly Dictionary<string, JsonElement> Vectors = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestData.Root, "merkle", "signed_note_vectors.json")))
        .RootElement.GetProperty("vectors").EnumerateArray().ToDictionary(v => v.GetProperty("id").GetString()!);

    private static string S(string id, string field) => Vectors[id].GetProperty(field).GetString()!;

    [Fact]
    public void A_private_key_signs_exactly_as_the_reference_and_its_public_key_reads_back()
    {
        using var signer = SignedNote.Signer.Parse(S("golang-mod-PeterNeumann", "skey"));
        Assert.Equal(S("golang-mod-PeterNeumann", "vkey"), signer.Verifier.VKey);
        Assert.Equal(S("golang-mod-PeterNeumann", "skey"), signer.SKey);
        Assert.Equal(S("golang-mod-PeterNeumann", "signedNote"), SignedNote.Sign(S("golang-mod-PeterNeumann", "text"), signer));
        Assert.Equal(signer.Verifier.PublicKey, SignedNote.ParseVerifier(signer.Verifier.VKey).PublicKey);
    }

    [Theory]
    [InlineData("golang-mod-PeterNeumann", "PeterNeumann")]
    [InlineData("golang-mod-EnochRoot", "EnochRoot")]
    [InlineData("c2sp-signed-note-example", "example.com/foo")]
    public void Published_notes_verify(string id, string name)
    {
        Assert.True(SignedNote.TryOpen(S(id, "signedNote"), [SignedNote.ParseVerifier(S(id, "vkey"))], out var text, out var by, out var error), error);
        Assert.Equal([name], by);
        Assert.EndsWith("\n", text);
    }

    [Fact]
    public void Unknown_signers_are_ignored_and_a_bad_signature_by_a_known_key_rejects_the_note()
    {
        var keys = Vectors["golang-mod-two-signatures"].GetProperty("vkeys").EnumerateArray().Select(k => SignedNote.ParseVerifier(k.GetString()!)).ToList();
        var note = S("golang-mod-two-signatures", "signedNote");
        Assert.True(SignedNote.TryOpen(note, keys, out _, out var both, out _));
        Assert.Equal(["PeterNeumann", "EnochRoot"], both);
        Assert.True(SignedNote.TryOpen(note, [keys[0]], out _, out var one, out _));
        Assert.Equal(["PeterNeumann"], one);
        Assert.False(SignedNote.TryOpen(S("golang-mod-invalid-signature", "signedNote"), [keys[0]], out _, out _, out var error));
        Assert.Equal("invalid signature for key PeterNeumann+c74f20a3", error);
        Assert.False(SignedNote.TryOpen(note, [SignedNote.ParseVerifier(S("c2sp-signed-note-example", "vkey"))], out _, out _, out error));
        Assert.Equal("no signature by a known key", error);
        Assert.Throws<FormatException>(() => SignedNote.ParseVerifier("PeterNeumann+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"));
    }

    [Fact]
    public void Checkpoints_round_trip_and_the_c2sp_example_parses()
    {
        var example = S("c2sp-tlog-checkpoint-example", "signedNote");
        var body = example[..(example.LastIndexOf("\n\n", StringComparison.Ordinal) + 1)];
        Assert.True(Checkpoint.TryParse(body, out var parsed));
        Assert.Equal(("example.com/behind-the-sofa", 20852163L), (parsed.Origin, parsed.Size));
        Assert.Equal(body, parsed.Text);

        using var node = SignedNote.Signer.Create("ward/test-node");
        var checkpoint = new Checkpoint("ward/test-node", 42, Merkle.EmptyRoot());
        var signed = SignedNote.Sign(checkpoint.Text, node);
        Assert.True(SignedNote.TryOpen(signed, [node.Verifier], out var text, out _, out _));
        Assert.True(Checkpoint.TryParse(text, out var back));
        Assert.Equal((checkpoint.Origin, checkpoint.Size), (back.Origin, back.Size));
        Assert.Equal(checkpoint.Root, back.Root);
        Assert.False(SignedNote.TryOpen(signed.Replace("\n42\n", "\n43\n", StringComparison.Ordinal), [node.Verifier], out _, out _, out _));
        Assert.False(Checkpoint.TryParse("origin\n042\nAAAA\n", out _));
        Assert.False(Checkpoint.TryParse("origin\n-1\n" + Convert.ToBase64String(new byte[32]) + "\n", out _));
    }
}
