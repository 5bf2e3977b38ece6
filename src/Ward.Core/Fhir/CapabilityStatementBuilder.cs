using Hl7.Fhir.Model;
using Ward.Core.Search;

namespace Ward.Core.Fhir;

/// <summary>The CapabilityStatement, generated from what the code supports so that it cannot drift from it.</summary>
internal static class CapabilityStatementBuilder
{
    private static readonly Lazy<byte[]> Cached = new(() => FhirJson.Serialize(Build()));

    public static byte[] Bytes => Cached.Value;

    public static string SoftwareVersion =>
        typeof(CapabilityStatementBuilder).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    private static CapabilityStatement Build()
    {
        var interactions = new[]
        {
            CapabilityStatement.TypeRestfulInteraction.Read, CapabilityStatement.TypeRestfulInteraction.Vread,
            CapabilityStatement.TypeRestfulInteraction.Update, CapabilityStatement.TypeRestfulInteraction.Patch,
            CapabilityStatement.TypeRestfulInteraction.Delete, CapabilityStatement.TypeRestfulInteraction.HistoryInstance,
            CapabilityStatement.TypeRestfulInteraction.HistoryType, CapabilityStatement.TypeRestfulInteraction.Create,
            CapabilityStatement.TypeRestfulInteraction.SearchType,
        };
        var resources = new List<CapabilityStatement.ResourceComponent>();
        foreach (var type in SearchParameters.ResourceTypes)
        {
            var r = new CapabilityStatement.ResourceComponent
            {
                Type = type,
                Versioning = CapabilityStatement.ResourceVersionPolicy.Versioned,
                ReadHistory = true,
                UpdateCreate = true,
                ConditionalCreate = true,
                ConditionalRead = CapabilityStatement.ConditionalReadStatus.FullSupport,
                ConditionalUpdate = true,
                ConditionalDelete = CapabilityStatement.ConditionalDeleteStatus.Single,
                Interaction = interactions.Select(i => new CapabilityStatement.ResourceInteractionComponent { Code = i }).ToList(),
                SearchInclude = SearchParameters.For(type).Values.Where(p => p.Type == ParamType.Reference).Select(p => $"{type}:{p.Code}").Prepend("*").ToList(),
                SearchRevInclude = [.. RevIncludes(type)],
                SearchParam = SearchParameters.For(type).Values.OrderBy(p => p.Code, StringComparer.Ordinal).Select(p => new CapabilityStatement.SearchParamComponent
                {
                    Name = p.Code,
                    Definition = p.Url,
                    Type = p.Type switch
                    {
                        ParamType.String => SearchParamType.String,
                        ParamType.Token => SearchParamType.Token,
                        ParamType.Date => SearchParamType.Date,
                        ParamType.Number => SearchParamType.Number,
                        ParamType.Quantity => SearchParamType.Quantity,
                        ParamType.Uri => SearchParamType.Uri,
                        ParamType.Reference => SearchParamType.Reference,
                        ParamType.Composite => SearchParamType.Composite,
                        _ => SearchParamType.Special,
                    },
                    Documentation = p.Description,
                }).ToList(),
            };
            if (type == "Patient")
            {
                r.Operation.Add(new CapabilityStatement.OperationComponent { Name = "everything", Definition = "http://hl7.org/fhir/OperationDefinition/Patient-everything" });
            }
            resources.Add(r);
        }
        return new CapabilityStatement
        {
            Id = "ward",
            Url = "urn:ward:capabilitystatement",
            Name = "Ward",
            Title = "Ward health data node",
            Status = PublicationStatus.Active,
            Date = "2026-11-23",
            Publisher = "Ward",
            Kind = CapabilityStatementKind.Instance,
            Software = new CapabilityStatement.SoftwareComponent { Name = "Ward", Version = SoftwareVersion },
            FhirVersion = FHIRVersion.N4_0_1,
            Format = ["json", "xml"],
            PatchFormat = ["application/json-patch+json"],
            Rest =
            [
                new CapabilityStatement.RestComponent
                {
                    Mode = CapabilityStatement.RestfulCapabilityMode.Server,
                    Documentation = "FHIR R4 REST API of a Ward node. Unknown search parameters are ignored with a warning unless Prefer: handling=strict is sent.",
                    Security = new CapabilityStatement.SecurityComponent
                    {
                        Cors = true,
                        Service = [new CodeableConcept("http://terminology.hl7.org/CodeSystem/restful-security-service", "SMART-on-FHIR", "SMART-on-FHIR")],
                        Description = "Every interaction but GET /metadata needs an OAuth 2 bearer token from this node's authorization server; "
                            + "SMART App Launch 2 and Backend Services, endpoints in [base]/.well-known/smart-configuration. Scopes are enforced per interaction.",
                    },
                    Resource = resources,
                    Interaction =
                    [
                        new() { Code = CapabilityStatement.SystemRestfulInteraction.Transaction },
                        new() { Code = CapabilityStatement.SystemRestfulInteraction.Batch },
                        new() { Code = CapabilityStatement.SystemRestfulInteraction.HistorySystem },
                    ],
                    Operation =
                    [
                        new CapabilityStatement.OperationComponent { Name = "everything", Definition = "http://hl7.org/fhir/OperationDefinition/Patient-everything" },
                    ],
                },
            ],
        };
    }

    private static IEnumerable<string> RevIncludes(string type) =>
        SearchParameters.ResourceTypes.SelectMany(source => SearchParameters.For(source).Values
            .Where(p => p.Type == ParamType.Reference && (p.Targets.Count == 0 || p.Targets.Contains(type)))
            .Select(p => $"{source}:{p.Code}"));
}
