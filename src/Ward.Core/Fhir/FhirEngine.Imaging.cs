using System.Globalization;
using System.Text.RegularExpressions;
using Hl7.Fhir.Model;
using Ward.Core.Access;
using Ward.Core.Imaging;
using Ward.Core.Policy;
using Ward.Core.Search;
using Ward.Core.Storage;
using Task = System.Threading.Tasks.Task;

namespace Ward.Core.Fhir;

/// <summary>An instance STOW-RS refused, with its PS3.4 failure reason (0xC000 cannot understand, 0xA900 does not match, 0x0110 processing failure).</summary>
internal readonly record struct FailedInstance(string? SopClass, string? SopInstance, ushort Reason, string Why);

internal readonly record struct StoredInstance(string SopClass, string SopInstance, string StudyUid, string SeriesUid);

/// <summary>
/// One instance found by QIDO-RS or WADO-RS, as its Part 10 bytes (stored, served as they are) or its dataset (a
/// de-identified copy): each form made from the other only when asked for, once.
/// </summary>
internal sealed class FoundInstance
{
    private byte[]? _bytes;
    private DicomFile? _file;

    public FoundInstance(string owner, byte[] bytes) => (Owner, _bytes) = (owner, bytes);

    public FoundInstance(string owner, DicomFile file) => (Owner, _file) = (owner, file);

    /// <summary>The patient whose compartment holds the instance.</summary>
    public string Owner { get; }

    public byte[] Bytes => _bytes ??= DicomWriter.ToBytes(_file!);

    public DicomFile File => _file ??= DicomFile.Read(_bytes!);
}

internal enum ImagingLevel { Study, Series, Instance }

/// <summary>One QIDO-RS result: the instance whose attributes describe it, and the counts and modalities of its group.</summary>
internal sealed record ImagingMatch(FoundInstance First, int Instances, int Series, string[] Modalities);

/// <summary>QIDO-RS matching: the keys Ward matches on, with DICOM's matching rules (PS3.18 8.3.4).</summary>
internal sealed record ImagingQuery(
    string? StudyUid, string? SeriesUid, string? SopUid, string? PatientId, string? PatientName, string? Accession,
    (long Lo, long Hi)? StudyDate, string? Modality, int Limit, int Offset, IReadOnlyList<DicomTag> IncludeFields, bool IncludeAll);

/// <summary>
/// Images under the same rules as records: each DICOM instance is stored as a version of the internal type
/// <c>DicomInstance</c> (never reachable through the FHIR API) in its patient's compartment, sealed under that patient's
/// key, indexed blind (UIDs, patient id, accession number) and in clear (modality, study date), and counted in its
/// series of the study's ImagingStudy resource. Access is decided as for ImagingStudy, row by row, by the same policy engine; every
/// store, query and retrieval leaves BALP records naming the study.
/// </summary>
internal sealed partial class FhirEngine
{
    public const string InstanceType = "DicomInstance";
    private const string DicomUidSystem = "urn:dicom:uid";
    private const string DcmSystem = "http://dicom.nema.org/resources/ontology/DCM";

    /// <summary>The ImagingStudy id of a study: a blind of its UID (UIDs can say when and where, so none appears in clear).</summary>
    internal string StudyResourceId(string studyUid) => StudyIdOfToken(BlindUid("study", studyUid));

    /// <summary>The ImagingStudy id of the study an instance's <c>study</c> token names (the token is the same blind of the UID).</summary>
    private static string StudyIdOfToken(string studyToken) => studyToken.Replace('_', '.');

    private string InstanceId(string sopUid) => store.Keys.Blind.Hash(Crypto.Blinder.Token, "dicom-sop", sopUid);

    private string BlindUid(string param, string uid) => Instances.BlindUid(param, uid);

    private InstanceIndexer? _instances;

    /// <summary>What an instance contributes to the index (the same code derives it again in <c>ward verify</c>).</summary>
    private InstanceIndexer Instances => _instances ??= new InstanceIndexer(store.Keys.Blind);

    /// <summary>What researchers are served (<see cref="InstanceIndexer.Research"/>).</summary>
    private DicomDeidentifier ResearchImages => Instances.Research;

    private sealed record Incoming(DicomFile File, byte[] Bytes, string StudyUid, string SeriesUid, string SopUid, string SopClass, string PatientId);

    /// <summary>
    /// STOW-RS: parses and checks the instances of one request, then has them written by a group commit (see
    /// <see cref="StowJob"/>) with their study's ImagingStudy and the request's audit records.
    /// Instances that cannot be read or lack what Ward needs are reported as failed; a policy refusal fails the request.
    /// </summary>
    public async Task<(List<StoredInstance> Stored, List<FailedInstance> Failed)> StoreImagesAsync(FhirRequest request, IReadOnlyList<ReadOnlyMemory<byte>> parts, string? studyUid, CancellationToken ct)
    {
        var trail = request.Trail = new AuditTrail(request, store.Keys.Blind) { Subtype = "create", Action = 'C' };
        var failed = new List<FailedInstance>();
        var incoming = new List<Incoming>();
        foreach (var part in parts)
        {
            DicomFile file;
            try
            {
                file = DicomFile.Read(part);
            }
            catch (DicomException e)
            {
                failed.Add(new FailedInstance(null, null, 0xC000, e.Message));
                continue;
            }
            var ds = file.Dataset;
            var (sopClass, sop, study, series) = (ds.GetString(DicomTag.SopClassUid), ds.GetString(DicomTag.SopInstanceUid),
                ds.GetString(DicomTag.StudyInstanceUid), ds.GetString(DicomTag.SeriesInstanceUid));
            var patient = ds.GetString(DicomTag.PatientId);
            if (string.IsNullOrEmpty(sopClass) || string.IsNullOrEmpty(sop) || string.IsNullOrEmpty(study) || string.IsNullOrEmpty(series))
                failed.Add(new FailedInstance(sopClass, sop, 0xA900, "The instance lacks its SOP Class, SOP Instance, Study or Series Instance UID."));
            else if (studyUid is not null && study != studyUid)
                failed.Add(new FailedInstance(sopClass, sop, 0xA900, $"The instance belongs to another study than the one in the URL."));
            else if (string.IsNullOrEmpty(patient))
                failed.Add(new FailedInstance(sopClass, sop, 0xA900, "The instance has no Patient ID (0010,0020): every image must belong to a patient's compartment."));
            else
                incoming.Add(new Incoming(file, DicomWriter.ToBytes(file), study, series, sop, sopClass, patient));
        }
        if (incoming.Count == 0)
        {
            await audit.RecordAsync(trail.Records(failed.Count > 0 ? 409 : 400, Now()));
            return ([], failed);
        }
        try
        {
            AccessFor(request, images: true);
            RefuseWriteWhenReadOnly();
            Permit(request, "ImagingStudy", Interaction.Create);
            Permit(request, "ImagingStudy", Interaction.Update);
            var job = new StowJob(request, incoming);
            await WriteStowAsync(job);
            return (job.Stored, failed);
        }
        catch (Exception e) when (e is not Audit.AuditUnavailableException and not OperationCanceledException)
        {
            var (status, _) = Outcomes.FromException(e);
            await audit.RecordAsync(trail.Records((int)status, Now()));
            throw;
        }
    }

    /// <summary>
    /// A STOW-RS request's checked instances, waiting for the group commit that writes them. Concurrent requests share
    /// one transaction (one durable commit, one ImagingStudy version per study, however many requests sent instances of
    /// it); the first request to find the writer free writes every request queued by then, the others wait for it.
    /// </summary>
    private sealed class StowJob(FhirRequest request, List<Incoming> incoming)
    {
        public FhirRequest Request => request;

        public List<Incoming> Incoming => incoming;

        public long Bytes { get; } = incoming.Sum(i => (long)i.Bytes.Length);

        public List<StoredInstance> Stored { get; } = [];

        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Requests and bytes per group commit at most (a batch holds its instances in memory until it commits).</summary>
    private const int StowBatchJobs = 64;
    private const long StowBatchBytes = 64L << 20;

    private readonly System.Threading.Channels.Channel<StowJob> _stowQueue =
        System.Threading.Channels.Channel.CreateUnbounded<StowJob>(new System.Threading.Channels.UnboundedChannelOptions { SingleReader = true });

    private Task? _stowWriter;

    private Task WriteStowAsync(StowJob job)
    {
        if (Volatile.Read(ref _stowWriter) is null)
        {
            lock (_stowQueue)
            {
                _stowWriter ??= Task.Run(StowWriteLoopAsync);
            }
        }
        _stowQueue.Writer.TryWrite(job);
        // Not cancellable: a queued request is written by the writer, so each waits for its own outcome.
        return job.Done.Task;
    }

    /// <summary>
    /// The STOW writer: takes every request queued while it wrote the previous batch, writes them in one transaction,
    /// and goes on to the next batch as soon as that one has committed; each batch's requests answer once its commit is
    /// durable (the store's group commit flushes it meanwhile).
    /// </summary>
    private async Task StowWriteLoopAsync()
    {
        var queue = _stowQueue.Reader;
        while (await queue.WaitToReadAsync())
        {
            var batch = new List<StowJob>();
            long bytes = 0;
            while (batch.Count < StowBatchJobs && bytes < StowBatchBytes && queue.TryRead(out var next))
            {
                batch.Add(next);
                bytes += next.Bytes;
            }
            await WriteStowBatchAsync(batch);
        }
    }

    private async Task WriteStowBatchAsync(List<StowJob> batch)
    {
        try
        {
            var (_, durable) = await store.WriteCommittedAsync(s =>
            {
                WriteStowJobs(s, batch);
                return 0;
            }, CancellationToken.None);
            _ = RecordStore.AnswerWhenDurableAsync(durable, batch.Select(j => j.Done), e => e);
        }
        catch (FhirException) when (batch.Count > 1)
        {
            // A refusal that belongs to one request (policy, conflicting patient) must not fail the others: each alone.
            foreach (var job in batch)
            {
                await WriteStowBatchAsync([job]);
            }
        }
        catch (Exception e)
        {
            batch.ForEach(j => j.Done.TrySetException(e));
        }
    }

    /// <summary>An ImagingStudy version as a STOW batch wrote it, parsed and indexed.</summary>
    private sealed record WrittenStudy(int Version, ImagingStudy Study, IndexSet Index);

    /// <summary>
    /// The ImagingStudy versions the last STOW batches wrote, so that the next batch of a study (a modality sends a
    /// study's instances one after another) takes the study as it wrote it rather than decrypting and parsing it again.
    /// Used only while the stored version is still that one (any other write changes the version); taken out while a
    /// batch changes it, put back only once that batch has committed.
    /// </summary>
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, WrittenStudy> _writtenStudies = new(StringComparer.Ordinal);

    private const int WrittenStudiesKept = 256;

    private void KeepWrittenStudy(string id, WrittenStudy written)
    {
        if (_writtenStudies.Count >= WrittenStudiesKept)
        {
            _writtenStudies.Clear();
        }
        _writtenStudies[id] = written;
    }

    /// <summary>One study's ImagingStudy as a batch changes it, written once after every request of the batch.</summary>
    private sealed record StudyChange(string Id, CurrentInfo? Current, ImagingStudy Study, string Subject, IndexSet Index)
    {
        public FhirRequest? LastWriter { get; set; }
    }

    /// <summary>
    /// An instance of a batch, checked and sealed (a large one appended to a blob file) before any row of the batch is
    /// written. Null <see cref="Sealed"/>: the batch stores the same instance earlier, so it is versioned and sealed
    /// after that one is written.
    /// </summary>
    private sealed record InstanceWrite(StowJob Job, Incoming Instance, string PatientId, StudyChange Study, string Id, CurrentInfo? Existing, int Version, long Ticks, StoreSession.SealedData? Sealed);

    private void WriteStowJobs(StoreSession s, List<StowJob> batch)
    {
        var studies = new Dictionary<string, StudyChange>(StringComparer.Ordinal);
        var writes = new List<InstanceWrite>();
        var ids = new HashSet<string>(StringComparer.Ordinal);
        foreach (var job in batch)
        {
            job.Request.Trail!.Restart();
            AccessOf(job.Request).ForgetFacts();
            job.Stored.Clear();
            OpenGlass(s, job.Request);
            foreach (var study in job.Incoming.GroupBy(i => i.StudyUid))
            {
                var (patientId, change) = OpenStudy(s, job.Request, study.Key, [.. study], studies);
                foreach (var instance in study)
                {
                    var id = InstanceId(instance.SopUid);
                    if (!ids.Add(id))
                    {
                        writes.Add(new InstanceWrite(job, instance, patientId, change, id, null, 0, 0, null));
                        continue;
                    }
                    var (existing, version, ticks) = NextVersion(s, id);
                    writes.Add(new InstanceWrite(job, instance, patientId, change, id, existing, version, ticks, s.Seal(InstanceType, id, version, ticks, instance.Bytes, patientId)));
                }
            }
        }
        // The batch's images reach the disk while its rows are written; the commit waits for whatever is left of it.
        s.StartBlobFlush();
        foreach (var write in writes)
        {
            var (existing, version, ticks) = write.Sealed is null ? NextVersion(s, write.Id) : (write.Existing, write.Version, write.Ticks);
            var instance = write.Instance;
            if (existing is null) AddToStudy(write.Study.Study, instance);
            var (_, digest) = s.Put(InstanceType, write.Id, existing, version, ticks, existing is null ? "POST" : "PUT",
                write.Sealed ?? s.Seal(InstanceType, write.Id, version, ticks, instance.Bytes, write.PatientId), InstanceIndex(instance, write.PatientId));
            write.Job.Request.Trail!.Wrote(InstanceType, write.Id, version, digest, write.PatientId);
            write.Job.Stored.Add(new StoredInstance(instance.SopClass, instance.SopUid, instance.StudyUid, instance.SeriesUid));
        }
        foreach (var change in studies.Values)
        {
            var study = change.Study;
            study.NumberOfSeries = study.Series.Count;
            study.NumberOfInstances = study.Series.Sum(se => se.NumberOfInstances ?? 0);
            study.Modality = [.. study.Series.Select(se => se.Modality).Where(m => m is not null).DistinctBy(m => m.Code)];
            var prepared = Prepare("ImagingStudy", change.Id, study, change.Current, change.Current is { Deleted: false } ? "PUT" : "POST");
            Apply(s, prepared, change.LastWriter!);
            s.OnCommitted(() => KeepWrittenStudy(change.Id, new WrittenStudy(prepared.Version, study, prepared.Index)));
        }
        foreach (var job in batch)
        {
            audit.Append(s, job.Request.Trail!.Records(200, Now()));
        }
    }

    /// <summary>An instance's current version, if any, and the number and time of its next.</summary>
    private (CurrentInfo? Existing, int Version, long Ticks) NextVersion(StoreSession s, string id)
    {
        var existing = s.GetCurrent(InstanceType, id);
        var (version, ticks) = Next(existing);
        return (existing, version, ticks);
    }

    /// <summary>
    /// The patient of a request's instances of one study, and the study as the batch changes it, once the request is
    /// allowed to write it.
    /// </summary>
    private (string PatientId, StudyChange Change) OpenStudy(StoreSession s, FhirRequest request, string studyUid, List<Incoming> instances, Dictionary<string, StudyChange> studies)
    {
        if (instances.Any(i => i.PatientId != instances[0].PatientId))
            throw FhirException.BadRequest($"The instances of one study name different Patient IDs; Ward keeps a study in one patient's compartment.");
        try
        {
            return OpenStudyOf(s, request, studyUid, instances, studies);
        }
        catch (FhirException refused) when (refused.Status is System.Net.HttpStatusCode.Forbidden or System.Net.HttpStatusCode.NotFound)
        {
            // Whether the Patient ID or the study is someone's the caller may not reach, or is new and the caller may not
            // create its patient: one refusal, naming no patient, saying nothing of their Consent (issue 29, point 6).
            var access = AccessOf(request);
            throw access.Policy.Hidden(access.Role, Decision.Deny("stow.patient", "")).Refusal();
        }
    }

    private (string PatientId, StudyChange Change) OpenStudyOf(StoreSession s, FhirRequest request, string studyUid, List<Incoming> instances, Dictionary<string, StudyChange> studies)
    {
        var first = instances[0].File.Dataset;
        var patientId = ResolvePatient(s, request, first);

        var studyId = StudyResourceId(studyUid);
        if (!studies.TryGetValue(studyId, out var change))
        {
            var current = s.GetCurrent("ImagingStudy", studyId);
            if (_writtenStudies.TryRemove(studyId, out var written) && current is { Deleted: false, Erased: false } c && c.Version == written.Version)
            {
                change = new StudyChange(studyId, current, written.Study, written.Study.Subject?.Reference ?? "", written.Index);
            }
            else
            {
                var study = current is { Deleted: false } ? (ImagingStudy)FhirJson.Parse(s.Read("ImagingStudy", studyId)!.Data) : NewStudy(studyUid, patientId, first);
                change = new StudyChange(studyId, current, study, study.Subject?.Reference ?? "", Indexer.Index(study, store.Keys.Blind));
            }
            studies[studyId] = change;
        }
        if (change.Current is { } stored && change.Subject != $"Patient/{patientId}")
            PermitStored(s, request, "ImagingStudy", studyId, stored, Interaction.Read);
        if (change.Subject != $"Patient/{patientId}")
            throw new FhirException(System.Net.HttpStatusCode.Conflict, OperationOutcome.IssueType.Conflict,
                "This study is already stored in another patient's compartment; an instance cannot move it.");
        // The study's version is written once for the batch, by its last writer; every writer must be allowed to write it.
        PermitWrite(s, request, "ImagingStudy", studyId, change.Current, change.Current is { Deleted: false } ? Interaction.Update : Interaction.Create, change.Index);
        change.LastWriter = request;
        return (patientId, change);
    }

    private IndexSet InstanceIndex(Incoming instance, string patientId) => Instances.Index(instance.File.Dataset, patientId);

    private static DateTime? Day(string? dicomDate) => InstanceIndexer.Day(dicomDate);

    /// <summary>
    /// The patient an instance belongs to: the one Patient whose identifier has the instance's Patient ID (looked up
    /// whatever the caller may read, so that images join their records), else a new Patient made from the instance.
    /// </summary>
    private string ResolvePatient(StoreSession s, FhirRequest request, DicomDataset ds)
    {
        var patientId = ds.GetString(DicomTag.PatientId)!;
        var query = SearchQuery.Parse("Patient", [new("identifier", patientId.Replace("|", "\\|", StringComparison.Ordinal))], strict: true);
        var sql = new SqlSearch(request.BaseUrl, store.Keys.Blind, store.Engine, null, s);
        var where = sql.Where(query);
        var matches = s.QueryStrings($"SELECT r.id FROM resource r WHERE {where} LIMIT 2", sql.Args);
        if (matches.Count > 1)
        {
            // Several patients with this Patient ID is said only to a caller who may read them all.
            foreach (var match in matches) PermitRead(s, request, "Patient", match);
            throw new FhirException(System.Net.HttpStatusCode.Conflict, OperationOutcome.IssueType.MultipleMatches,
                "The instance's Patient ID matches several patients; Ward cannot tell which compartment the images belong to.");
        }
        if (matches.Count == 1) return matches[0];

        var patient = new Hl7.Fhir.Model.Patient
        {
            Identifier = [new Identifier(ds.GetString(DicomTag.IssuerOfPatientId) is { Length: > 0 } issuer ? $"urn:ward:dicom:issuer:{Uri.EscapeDataString(issuer)}" : "urn:ward:dicom:patient-id", patientId)],
        };
        if (ds.GetString(DicomTag.PatientName) is { Length: > 0 } name)
        {
            var parts = name.Split('=')[0].Split('^');
            var human = new HumanName { Family = parts[0].Length > 0 ? parts[0] : null };
            if (parts.Length > 1 && parts[1].Length > 0) human.Given = [parts[1]];
            patient.Name = [human];
        }
        if (Day(ds.GetString(DicomTag.PatientBirthDate)) is { } birth) patient.BirthDate = birth.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
        patient.Gender = ds.GetString(DicomTag.PatientSex) switch { "M" => AdministrativeGender.Male, "F" => AdministrativeGender.Female, "O" => AdministrativeGender.Other, _ => null };
        var id = NewId();
        Permit(request, "Patient", Interaction.Create);
        Apply(s, Prepare("Patient", id, patient, null, "POST"), request);
        return id;
    }

    private static ImagingStudy NewStudy(string studyUid, string patientId, DicomDataset ds)
    {
        var study = new ImagingStudy
        {
            Status = ImagingStudy.ImagingStudyStatus.Available,
            Subject = new ResourceReference($"Patient/{patientId}"),
            Identifier = [new Identifier(DicomUidSystem, "urn:oid:" + studyUid)],
            Description = ds.GetString(DicomTag.StudyDescription) is { Length: > 0 } d ? d : null,
        };
        if (ds.GetString(DicomTag.AccessionNumber) is { Length: > 0 } accession)
            study.Identifier.Add(new Identifier { Type = new CodeableConcept("http://terminology.hl7.org/CodeSystem/v2-0203", "ACSN"), Value = accession });
        if (Day(ds.GetString(DicomTag.StudyDate)) is { } day)
        {
            var time = ds.GetString(DicomTag.StudyTime);
            var at = time is { Length: >= 6 } && TimeSpan.TryParseExact(time[..6], "hhmmss", CultureInfo.InvariantCulture, out var t) ? day + t : day;
            study.StartedElement = new FhirDateTime(new DateTimeOffset(at, TimeSpan.Zero));
        }
        return study;
    }

    /// <summary>
    /// Counts a new instance in its series (adding the series if it is new). The ImagingStudy summarises series, not
    /// instances: listed one by one it would grow with the study and be rewritten whole for each instance stored (a CT
    /// of 3,000 images sent one per request would leave versions totalling gigabytes); QIDO-RS lists the instances.
    /// </summary>
    private static void AddToStudy(ImagingStudy study, Incoming instance)
    {
        var ds = instance.File.Dataset;
        var series = study.Series.FirstOrDefault(se => se.Uid == instance.SeriesUid);
        if (series is null)
        {
            series = new ImagingStudy.SeriesComponent
            {
                Uid = instance.SeriesUid,
                Number = ds.GetInt(DicomTag.SeriesNumber) is { } n && n >= 0 ? n : null,
                Modality = new Coding(DcmSystem, ds.GetString(DicomTag.Modality) is { Length: > 0 } m ? m : "OT"),
                Description = ds.GetString(DicomTag.SeriesDescription) is { Length: > 0 } d ? d : null,
            };
            study.Series.Add(series);
        }
        series.NumberOfInstances = (series.NumberOfInstances ?? 0) + 1;
    }

    // ------------------------------------------------------------------------------------------------------ reading

    /// <summary>
    /// The instances of a study (and series, and instance) for WADO-RS, each decided by the policy as a read of the
    /// study: 404 when none exists, 403 naming the rule when one exists that the caller may not read. A research role
    /// names the study by its de-identified UIDs and is served de-identified copies; the instances the profile withholds
    /// are left out and their reasons returned (403 with the reason when every instance is withheld).
    /// </summary>
    public async Task<(List<FoundInstance> Found, List<string> Withheld)> RetrieveImagesAsync(FhirRequest request, string studyUid, string? seriesUid, string? sopUid, CancellationToken ct)
    {
        var trail = request.Trail = new AuditTrail(request, store.Keys.Blind) { Subtype = "read", Action = 'R' };
        return await ReadImagesAsync(request, trail, s =>
        {
            var research = AccessOf(request).Deidentified;
            if (!research) trail.Target = ("ImagingStudy", StudyResourceId(studyUid));
            var scoped = Permit(request, "ImagingStudy", Interaction.Read) == Reach.Patient;
            var (where, args, _) = InstanceCondition(studyUid, seriesUid, sopUid, research);
            var rows = new List<(long Rid, string Study)>();
            using (var cmd = s.Command($"SELECT r.rid, st.code FROM resource r JOIN ix_token st ON st.rid = r.rid AND st.param = 'study' WHERE {where} ORDER BY r.rid"))
            {
                StoreSession.Bind(cmd, args);
                using var reader = cmd.ExecuteReader();
                while (reader.Read()) rows.Add((reader.GetInt64(0), reader.GetString(1)));
            }
            // Images the caller may not read answer as images that do not exist: the same 404, naming nothing.
            var missing = FhirException.NotFound((sopUid is not null ? "No such instance" : seriesUid is not null ? "No such series" : "No such study") + " among the images open to you.");
            if (rows.Count == 0) throw missing;
            var studyId = StudyIdOfToken(rows[0].Study);
            trail.Target = ("ImagingStudy", studyId);
            try
            {
                foreach (var (rid, _) in rows) Decide(s, request, "ImagingStudy", studyId, rid, Interaction.Read, scoped);
            }
            catch (FhirException hidden) when (hidden.Status == System.Net.HttpStatusCode.NotFound)
            {
                throw missing;
            }
            var versions = s.LoadCurrent([.. rows.Select(r => r.Rid)]);
            foreach (var v in versions) trail.Patient(v.Owner);
            if (s.Read("ImagingStudy", studyId) is { } studyVersion) trail.Saw(studyVersion);
            if (!research) return (versions.Select(v => new FoundInstance(v.Owner!, v.Data!)).ToList(), new List<string>());
            var found = new List<FoundInstance>();
            var withheld = new List<string>();
            foreach (var v in versions)
            {
                try
                {
                    found.Add(Deidentified(v));
                }
                catch (DeidentificationRefused e)
                {
                    withheld.Add(e.Message);
                }
            }
            if (found.Count == 0)
                throw Decision.Deny("deidentification.withheld", $"Every instance asked for is withheld from research: {withheld[0]}").Refusal();
            return (found, withheld);
        }, ct);
    }

    /// <summary>A stored instance as researchers are served it; <see cref="DeidentificationRefused"/> when the profile withholds it.</summary>
    private FoundInstance Deidentified(StoredVersion v) =>
        new(v.Owner!, ResearchImages.Deidentify(DicomFile.Read(v.Data!)));

    /// <summary>
    /// A DICOMweb read as the FHIR engine runs one: any break-the-glass opening committed first, the work in a read
    /// session, then its audit records durable before the answer; a refusal or failure recorded (against the patient of
    /// the study the trail targets, when there is one) before the error goes back.
    /// </summary>
    private async Task<T> ReadImagesAsync<T>(FhirRequest request, AuditTrail trail, Func<StoreSession, T> work, CancellationToken ct)
    {
        try
        {
            if (AccessFor(request, images: true).Justification is not null) await store.WriteAsync(s => { OpenGlass(s, request); return true; }, ct);
            var result = await store.ReadAsync(work, ct);
            await audit.RecordAsync(trail.Records(200, Now()));
            return result;
        }
        catch (Exception e) when (e is not Audit.AuditUnavailableException and not OperationCanceledException)
        {
            var owner = trail.Target is ("ImagingStudy", var studyId) ? await store.ReadAsync(s => s.OwnerOf("ImagingStudy", studyId), ct) : null;
            await audit.RecordAsync(trail.Records((int)Outcomes.FromException(e).Status, Now(), owner));
            throw;
        }
    }

    /// <summary>
    /// The instances with these UIDs (for a research role, the UIDs of their de-identified copies). The deepest UID given
    /// drives the query (<c>r.rid IN</c> its token rows, a handful); the others are checked per instance. Without this,
    /// SQLite (no statistics) walks every instance's study token and checks the UIDs row by row: 7 ms for one WADO-RS
    /// instance among 5,000.
    /// </summary>
    private (string Where, List<(string, object?)> Args, bool Driven) InstanceCondition(string? studyUid, string? seriesUid, string? sopUid, bool research)
    {
        var args = new List<(string, object?)> { ("@type", InstanceType) };
        var where = "r.type = @type AND r.deleted = 0";
        var driven = false;
        foreach (var (level, uid) in new[] { ("sop", sopUid), ("series", seriesUid), ("study", studyUid) })
        {
            if (uid is null) continue;
            var param = research ? "research-" + level : level;
            where += TokenCondition(param, "@" + level, ref driven);
            args.Add(($"@{level}", BlindUid(param, uid)));
        }
        return (where, args, driven);
    }

    /// <summary>An instance carries this token: the first such condition selects the candidate rows, the others filter them.</summary>
    private static string TokenCondition(string param, string code, ref bool driven)
    {
        var condition = driven
            ? $" AND EXISTS (SELECT 1 FROM ix_token t WHERE t.rid = r.rid AND t.param = '{param}' AND t.code = {code})"
            : $" AND r.rid IN (SELECT t.rid FROM ix_token t WHERE t.param = '{param}' AND t.code = {code})";
        driven = true;
        return condition;
    }

    /// <summary>
    /// QIDO-RS: the studies, series or instances (<paramref name="level"/>) with an instance matching
    /// <paramref name="query"/> that the caller may read, filtered in SQL by the same row filter as FHIR searches (so
    /// nothing withheld is counted or paged). Grouping, counts and modalities come from the index; only one instance of
    /// each group on the page is opened, for its attributes (and patient names are matched on it, with DICOM wildcards).
    /// </summary>
    public async Task<List<ImagingMatch>> QueryImagesAsync(FhirRequest request, ImagingQuery query, ImagingLevel level, CancellationToken ct)
    {
        var trail = request.Trail = new AuditTrail(request, store.Keys.Blind) { Subtype = "search-type", Action = 'E' };
        return await ReadImagesAsync(request, trail, s =>
        {
            var reach = Permit(request, "ImagingStudy", Interaction.Search);
            var research = AccessOf(request).Deidentified;
            if (research && ((query.PatientId ?? query.PatientName ?? query.Accession) is not null || query.StudyDate is not null))
                throw Decision.Deny("view.deidentified", "Researchers see images de-identified: they match on the de-identified UIDs and Modality, not on patient names, identifiers, accession numbers or study dates.").Refusal();
            var (where, args, driven) = InstanceCondition(query.StudyUid, query.SeriesUid, query.SopUid, research);
            if (research) where += " AND NOT EXISTS (SELECT 1 FROM ix_token t WHERE t.rid = r.rid AND t.param = 'research-withheld')";
            string Arg(object? value)
            {
                var name = "@q" + args.Count.ToString(CultureInfo.InvariantCulture);
                args.Add((name, value));
                return name;
            }
            string Token(string param, string code) => TokenCondition(param, Arg(code), ref driven);
            if (query.PatientId is { } pid) where += Token("patient-id", BlindUid("patient-id", pid));
            if (query.Accession is { } accession) where += Token("accession", BlindUid("accession", accession));
            if (query.StudyDate is var (lo, hi))
                where += $" AND EXISTS (SELECT 1 FROM ix_date d WHERE d.rid = r.rid AND d.param = 'study-date' AND d.lo <= {Arg(hi)} AND d.hi >= {Arg(lo)})";
            if (query.Modality is { } modality)
            {
                // A study matches when any of its series has the modality; its counts still take all its instances.
                var code = Arg(modality);
                string Modality(string alias) => $"EXISTS (SELECT 1 FROM ix_token t WHERE t.rid = {alias}.rid AND t.param = 'modality' AND t.code = {code})";
                where += level == ImagingLevel.Study
                    ? $" AND EXISTS (SELECT 1 FROM ix_token st2 JOIN resource r2 ON r2.rid = st2.rid WHERE st2.param = 'study' AND st2.code = st.code AND r2.deleted = 0 AND {Modality("r2")})"
                    : " AND " + Modality("r");
            }
            if (reach == Reach.Patient)
                where += $" AND EXISTS (SELECT 1 FROM ix_compartment c WHERE c.rid = r.rid AND c.patient_id = {Arg(request.Caller.Patient)})";
            if (AccessFor(request).RowFilter(s, "r", Arg) is { } filter) where += " AND " + filter;
            var rows = new List<(long Rid, string Study, string Series, string? Modality)>();
            using (var cmd = s.Command($"SELECT r.rid, st.code, se.code, m.code FROM resource r JOIN ix_token st ON st.rid = r.rid AND st.param = 'study' "
                + $"JOIN ix_token se ON se.rid = r.rid AND se.param = 'series' LEFT JOIN ix_token m ON m.rid = r.rid AND m.param = 'modality' WHERE {where} ORDER BY r.rid"))
            {
                StoreSession.Bind(cmd, args);
                using var reader = cmd.ExecuteReader();
                while (reader.Read()) rows.Add((reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.IsDBNull(3) ? null : reader.GetString(3)));
            }
            var groups = rows.GroupBy(r => level switch { ImagingLevel.Study => r.Study, ImagingLevel.Series => r.Series, _ => r.Rid.ToString(CultureInfo.InvariantCulture) });
            var regex = query.PatientName is { Length: > 0 } pattern ? NamePattern(pattern) : null;
            var matches = new List<ImagingMatch>();
            var skipped = 0;
            foreach (var group in groups)
            {
                if (matches.Count == query.Limit) break;
                // Without a name to match, the groups before the page need not be opened.
                if (regex is null && skipped < query.Offset) { skipped++; continue; }
                var version = s.LoadCurrent([group.First().Rid])[0];
                var first = research ? Deidentified(version) : new FoundInstance(version.Owner!, version.Data!);
                if (regex is not null && !(first.File.Dataset.GetString(DicomTag.PatientName) is { } name && (regex.IsMatch(name) || regex.IsMatch(name.Split('=')[0])))) continue;
                if (skipped++ < query.Offset) continue;
                matches.Add(new ImagingMatch(first, group.Count(), group.Select(r => r.Series).Distinct().Count(),
                    [.. group.Select(r => r.Modality).OfType<string>().Distinct()]));
                trail.Patient(first.Owner);
            }
            return matches;
        }, ct);
    }

    /// <summary>DICOM wildcard matching (PS3.4 C.2.2.2.4): * any run, ? one character; case-insensitive, whole value.</summary>
    private static Regex NamePattern(string pattern) =>
        new("^" + Regex.Escape(pattern).Replace("\\*", ".*", StringComparison.Ordinal).Replace("\\?", ".", StringComparison.Ordinal) + "$",
            RegexOptions.IgnoreCase | RegexOptions.CultureInvariant | RegexOptions.Singleline, TimeSpan.FromMilliseconds(100));
}
