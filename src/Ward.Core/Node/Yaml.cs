using YamlDotNet.Serialization;
using YamlDotNet.Serialization.NamingConventions;

namespace Ward.Core.Node;

/// <summary>Ward's YAML files (ward.yaml, policy.yaml, research export configurations): hyphenated keys, errors that name the file and line.</summary>
internal static class Yaml
{
    public static readonly IDeserializer Reader = new DeserializerBuilder().WithNamingConvention(HyphenatedNamingConvention.Instance).Build();

    /// <summary>The document in <paramref name="yaml"/> (its defaults when empty); a syntax or type error names <paramref name="source"/> and the line.</summary>
    public static T Read<T>(string yaml, string source) where T : new()
    {
        try
        {
            return Reader.Deserialize<T>(yaml) ?? new T();
        }
        catch (YamlDotNet.Core.YamlException e)
        {
            throw new NodeException($"{source}: {e.Message}{(e.InnerException is { } inner ? " " + inner.Message : "")} (line {e.Start.Line}).");
        }
    }
}
