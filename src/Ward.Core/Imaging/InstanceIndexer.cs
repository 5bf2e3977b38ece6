using System.Globalization;
using Ward.Core.Crypto;
using Ward.Core.Search;

namespace Ward.Core.Imaging;

/// <summary>
/// What a stored DICOM instance contributes to the search index, derived from its dataset and the patient whose data key
/// seals it: the same at STOW-RS and when <c>ward verify</c> derives the index again from the sealed instance.
/// </summary>
internal sealed class InstanceIndexer(Blinder blind)
{
    private DicomDeidentifier? _research;

    /// <summary>
    /// What researchers are served: PS3.15's Basic Profile with dates moved by a per-patient offset (the Retain
    /// Longitudinal Temporal Information Modified Dates option), burned-in images withheld. UIDs are remapped under a key
    /// derived from the node's index key: the same at every retrieval (so they are indexed at STOW and a researcher can
    /// come back to a study), the same for every researcher of the node, and not mappable back without the node's keys.
    /// </summary>
    public DicomDeidentifier Research => _research ??=
        new DicomDeidentifier(DeidOptions.ModifyDates, System.Buffers.Text.Base64Url.DecodeFromChars(blind.Hash('k', "dicom-research-key", "")));

    /// <summary>A UID (or Patient ID, accession number) as the index holds it: a blind, never the value.</summary>
    public string BlindUid(string param, string uid) => blind.Hash(Blinder.Token, "dicom-" + param, uid);

    /// <summary>The index of an instance stored in <paramref name="patientId"/>'s compartment.</summary>
    public IndexSet Index(DicomDataset ds, string patientId)
    {
        var (study, series, sop) = (ds.GetString(DicomTag.StudyInstanceUid)!, ds.GetString(DicomTag.SeriesInstanceUid)!, ds.GetString(DicomTag.SopInstanceUid)!);
        var index = new IndexSet { Owner = patientId };
        index.Patients.Add(patientId);
        index.Tokens.Add(new TokenEntry("study", null, BlindUid("study", study), null));
        index.Tokens.Add(new TokenEntry("series", null, BlindUid("series", series), null));
        index.Tokens.Add(new TokenEntry("sop", null, BlindUid("sop", sop), null));
        index.Tokens.Add(new TokenEntry("patient-id", null, BlindUid("patient-id", ds.GetString(DicomTag.PatientId)!), null));
        if (ds.GetString(DicomTag.AccessionNumber) is { Length: > 0 } accession)
            index.Tokens.Add(new TokenEntry("accession", null, BlindUid("accession", accession), null));
        if (ds.GetString(DicomTag.Modality) is { Length: > 0 } modality)
            index.Tokens.Add(new TokenEntry("modality", null, modality, null));
        if (Day(ds.GetString(DicomTag.StudyDate)) is { } day)
            index.Dates.Add(new DateEntry("study-date", day.Ticks, day.AddDays(1).Ticks - 1));
        // What researchers find the instance by: its UIDs as their de-identified copy has them, and whether it is withheld.
        var research = Research;
        index.Tokens.Add(new TokenEntry("research-study", null, BlindUid("research-study", research.Uid(study)), null));
        index.Tokens.Add(new TokenEntry("research-series", null, BlindUid("research-series", research.Uid(series)), null));
        index.Tokens.Add(new TokenEntry("research-sop", null, BlindUid("research-sop", research.Uid(sop)), null));
        if (research.WithheldBecause(ds) is not null)
            index.Tokens.Add(new TokenEntry("research-withheld", null, "1", null));
        return index;
    }

    /// <summary>A DICOM date (DA, YYYYMMDD) as a UTC day.</summary>
    internal static DateTime? Day(string? dicomDate) =>
        dicomDate is { Length: >= 8 } && DateTime.TryParseExact(dicomDate.AsSpan(0, 8), "yyyyMMdd", CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal, out var d)
            ? DateTime.SpecifyKind(d, DateTimeKind.Utc) : null;
}
