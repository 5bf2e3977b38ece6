using System.Collections;
using System.Text.RegularExpressions;
using Hl7.Fhir.FhirPath;
using Hl7.Fhir.Model;
using Hl7.FhirPath;
using Hl7.FhirPath.Expressions;

namespace Ward.Core.Search;

/// <summary>
/// Evaluates one branch of a search parameter expression. Plain element paths (<c>Observation.code</c>,
/// <c>(Observation.value as Quantity)</c>), which are most of them, walk the POCO directly; anything else goes
/// through Firely's compiled FHIRPath. Both give the same nodes; the direct walk is several times faster.
/// </summary>
internal sealed partial class PathEvaluator
{
    private static readonly FhirPathCompiler Compiler =
        new(new SymbolTable().AddStandardFP().AddFhirExtensions());

    private readonly string[]? _steps;
    private readonly Type? _asType;
    private readonly CompiledExpression? _compiled;

    public string Expression { get; }

    /// <param name="resourceType">The type the expression starts from, or null for an expression relative to a node.</param>
    public PathEvaluator(string? resourceType, string expression)
    {
        Expression = expression;
        var m = SimplePath().Match(expression);
        if (m.Success && (m.Groups["type"].Success ? m.Groups["type"].Value == resourceType : resourceType is null))
        {
            _steps = m.Groups["path"].Value.Split('.', StringSplitOptions.RemoveEmptyEntries);
            var asName = m.Groups["as1"].Success ? m.Groups["as1"].Value : m.Groups["as2"].Success ? m.Groups["as2"].Value : null;
            if (asName is not null)
            {
                _asType = ModelInfo.GetTypeForFhirType(asName) ?? PrimitiveFor(asName);
                if (_asType is null)
                {
                    _steps = null;
                }
            }
        }
        if (_steps is null)
        {
            _compiled = Compiler.Compile(expression);
        }
    }

    public bool IsDirect => _steps is not null;

    private static Type? PrimitiveFor(string name) => name switch
    {
        "string" => typeof(FhirString),
        "dateTime" => typeof(FhirDateTime),
        "date" => typeof(Date),
        "boolean" => typeof(FhirBoolean),
        "uri" => typeof(FhirUri),
        "integer" => typeof(Integer),
        "decimal" => typeof(FhirDecimal),
        _ => null,
    };

    /// <summary>The branches of a union expression, each with its own evaluator.</summary>
    public static List<PathEvaluator> Union(string? resourceType, string expression) =>
        SearchParameters.SplitUnion(expression).Select(b => new PathEvaluator(resourceType, b)).ToList();

    public IEnumerable<Base> Evaluate(Base resource, Lazy<PocoNode> node)
    {
        if (_steps is null)
        {
            foreach (var n in _compiled!.Invoke([node.Value], Context))
            {
                if (n.Poco is { } poco)
                {
                    yield return poco;
                }
            }
            yield break;
        }
        foreach (var b in Walk(resource, 0))
        {
            if (_asType is null || _asType.IsInstanceOfType(b))
            {
                yield return b;
            }
        }
    }

    private static readonly FhirEvaluationContext Context = new();

    private IEnumerable<Base> Walk(Base current, int step)
    {
        if (step == _steps!.Length)
        {
            yield return current;
            yield break;
        }
        if (!current.TryGetValue(_steps[step], out var value) || value is null)
        {
            yield break;
        }
        if (value is Base single)
        {
            foreach (var b in Walk(single, step + 1))
            {
                yield return b;
            }
        }
        else if (value is IEnumerable list)
        {
            foreach (var item in list)
            {
                if (item is Base element)
                {
                    foreach (var b in Walk(element, step + 1))
                    {
                        yield return b;
                    }
                }
            }
        }
    }

    [GeneratedRegex(@"^\(?((?<type>[A-Z][A-Za-z]+)\.)?(?<path>[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*)(\s+as\s+(?<as1>[A-Za-z]+)\)|\.as\((?<as2>[A-Za-z]+)\)|\))?$")]
    private static partial Regex SimplePath();
}
