using Ward.Core.Search;
using Ward.Core.Storage;

namespace Ward.Core.Transfer;

/// <summary>Writes the current version of every resource as NDJSON, one file per type (FHIR Bulk Data layout).</summary>
internal static class Exporter
{
    public static SortedDictionary<string, long> Export(RecordStore store, string outDir)
    {
        if (File.Exists(outDir))
        {
            throw new Node.NodeException($"'{Path.GetFullPath(outDir)}' is a file: --out names the folder for the NDJSON files.");
        }
        Directory.CreateDirectory(outDir);
        var counts = new SortedDictionary<string, long>(StringComparer.Ordinal);
        using var session = store.OpenRead();
        foreach (var type in SearchParameters.ResourceTypes)
        {
            long n = 0;
            FileStream? file = null;
            try
            {
                foreach (var data in session.CurrentData(type))
                {
                    file ??= new FileStream(Path.Combine(outDir, type + ".ndjson"), FileMode.Create, FileAccess.Write);
                    file.Write(data);
                    file.WriteByte((byte)'\n');
                    n++;
                }
            }
            finally
            {
                file?.Dispose();
            }
            if (n > 0)
            {
                counts[type] = n;
            }
        }
        return counts;
    }
}
