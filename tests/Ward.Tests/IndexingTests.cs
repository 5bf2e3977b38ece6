using Hl7.Fhir.FhirPath;
using Hl7.Fhir.Model;
using Ward.Core.Fhir;
using Ward.Core.Search;

namespace Ward.Tests;

/// <summary>The direct element walk used for indexing gives exactly what Firely's FHIRPath gives.</summary>
public sealed class IndexingTests
{
    private static IEnumerable<Resource> Resources()
    {
        foreach (var file in Directory.EnumerateFiles(Path.Combine(TestData.RepoRoot, "samples", "synthea"), "*.json"))
        {
            foreach (var e in ((Bundle)FhirJson.Parse(File.ReadAllBytes(file))).Entry)
            {
                yield return e.Resource!;
            }
        }
        foreach (var file in Directory.EnumerateFiles(Path.Combine(TestData.Root, "fhir-r4", "instances"), "*.json"))
        {
            Resource? r = null;
            try
            {
                r = FhirJson.Parse(File.ReadAllBytes(file));
            }
            catch (FhirException)
            {
                // The five invalid examples (see OfficialExamplesTests) are not indexed.
            }
            if (r is not null)
            {
                yield return r;
            }
        }
    }

    [Fact]
    public void Direct_paths_agree_with_fhirpath_on_synthea_and_the_official_examples()
    {
        int branches = 0, direct = 0;
        var differences = new List<string>();
        foreach (var r in Resources())
        {
            var node = new Lazy<PocoNode>(() => r.ToPocoNode(ModelInfo.ModelInspector, null));
            foreach (var sp in SearchParameters.For(r.TypeName).Values)
            {
                foreach (var (path, _) in sp.Branches)
                {
                    branches++;
                    direct += path.IsDirect ? 1 : 0;
                    var fast = path.Evaluate(r, node).Select(x => x.TypeName + ":" + x).ToList();
                    var reference = r.Select(path.Expression).OfType<Base>().Select(x => x.TypeName + ":" + x).ToList();
                    if (!fast.SequenceEqual(reference))
                    {
                        differences.Add($"{r.TypeName}.{sp.Code} [{path.Expression}]");
                    }
                }
            }
        }
        Assert.Empty(differences);
        Assert.True(direct > branches * 9 / 10, $"only {direct} of {branches} branches take the direct path");
    }

    [Fact]
    public void Indexing_a_synthea_observation_fills_every_kind_of_entry()
    {
        var bundle = (Bundle)FhirJson.Parse(File.ReadAllBytes(Directory.EnumerateFiles(Path.Combine(TestData.RepoRoot, "samples", "synthea"), "6c8f*.json").Single()));
        var obs = bundle.Entry.Select(e => e.Resource).OfType<Observation>().First(o => o.Value is Quantity);
        obs.Subject = new ResourceReference("Patient/p1");
        var set = Indexer.Index(obs, new Ward.Core.Crypto.Blinder(new byte[32]));
        Assert.Contains(set.References, r => r.Param == "patient" && r.TargetType == "Patient" && r.TargetId == "p1");
        Assert.Contains(set.Tokens, t => t.Param == "code" && t.System == "http://loinc.org");
        Assert.Contains(set.Dates, d => d.Param == "date");
        Assert.Contains(set.Quantities, q => q.Param == "value-quantity");
        Assert.Contains(set.Composites, c => c.Param == "code-value-quantity");
        Assert.Equal(["p1"], set.Patients);
    }
}
