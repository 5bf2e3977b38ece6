using System.Globalization;
using Ward.Core.Crypto;
using Ward.Core.Fhir;
using Ward.Core.Imaging;
using Ward.Core.Search;
using Ward.Core.Storage;

namespace Ward.Core.Audit;

/// <summary>
/// The part of <c>ward verify</c> that checks what the policy decides on: every index row (relationships, security
/// labels, compartments, consent rules and every other search row) and the summary columns of each resource row
/// (<c>compartment</c>, <c>labelled</c>, <c>deleted</c>, <c>last_updated</c>) are derived again from the resource's sealed
/// current version, opened with the node keys and indexed by the code of the write path, and compared with what the
/// tables hold. A row added, removed or changed behind the node's back is named with its table and resource. The store is
/// read a page of resource rows at a time, one opened version at a time.
/// </summary>
internal static class IndexVerification
{
    private const int Page = 500;

    /// <summary>Problems reported one by one; beyond, only counted (a store rewritten wholesale does not fill the memory with its report).</summary>
    private const int Reported = 1_000;

    public static void Verify(StoreSession s, KeyRing keys, VerificationReport report)
    {
        var erased = s.ErasedPatients();
        var instances = new InstanceIndexer(keys.Blind);
        var counts = new Counts();
        void Problem(string problem)
        {
            if (counts.Problems++ < Reported)
            {
                report.Problems.Add(problem);
            }
        }
        for (var after = long.MinValue; ;)
        {
            var end = s.PageEnd(after, Page);
            var upto = end ?? long.MaxValue;
            var stored = s.IndexRowsBetween(after, upto);
            foreach (var version in s.IndexedVersionsBetween(after, upto))
            {
                counts.Resources++;
                stored.Remove(version.Rid, out var rows);
                counts.Rows += rows?.Count ?? 0;
                Compare(version, rows ?? [], keys, instances, erased, Problem);
            }
            foreach (var (rid, rows) in stored)
            {
                counts.Rows += rows.Count;
                foreach (var row in rows)
                {
                    Problem($"index row added: {row.Table} holds a row ({row.Shown}) for row id {rid.ToString(CultureInfo.InvariantCulture)}, which is no resource.");
                }
            }
            if (end is not { } next)
            {
                break;
            }
            after = next;
        }
        if (counts.Problems > Reported)
        {
            report.Problems.Add($"... and {counts.Problems - Reported:N0} more index rows and row summaries that differ from the sealed versions.");
        }
        report.Checked.Add($"{counts.Resources:N0} resources' index rows ({counts.Rows:N0}) and row summaries derived again from their sealed current versions");
    }

    private sealed class Counts
    {
        public long Resources;
        public long Rows;
        public long Problems;
    }

    private static void Compare(IndexedVersion v, List<IndexRow> actual, KeyRing keys, InstanceIndexer instances, HashSet<string> erased, Action<string> problem)
    {
        var what = v.Reference + (v.Deleted == 0 ? "" : v.Deleted == 2 ? " (erased)" : " (deleted)");
        if (v.Problem is not null)
        {
            problem($"index not checked: {what}: {v.Problem}.");
            return;
        }
        IndexSet? index = null;
        if (v.Data is { } data)
        {
            try
            {
                index = v.Type == FhirEngine.InstanceType
                    ? instances.Index(DicomFile.Read(data).Dataset, v.Owner ?? throw new InvalidDataException("an instance sealed under no patient's key"))
                    : Indexer.Index(FhirJson.Parse(data), keys.Blind);
            }
            catch (Exception e) when (e is FhirException or FormatException or InvalidDataException or DicomException or InvalidOperationException or ArgumentException)
            {
                problem($"index not checked: {what}: its current version cannot be indexed again ({e.GetType().Name}).");
                return;
            }
        }
        // An erasure took the erased patients out of the compartments of the resources of other patients that named them.
        var patients = index?.Patients.Where(p => !erased.Contains(p)).ToList() ?? [];
        var expected = index is null ? [] : IndexRow.Of(index, patients);

        var difference = new Dictionary<IndexRow, int>();
        foreach (var row in expected)
        {
            difference[row] = difference.GetValueOrDefault(row) + 1;
        }
        foreach (var row in actual)
        {
            difference[row] = difference.GetValueOrDefault(row) - 1;
        }
        foreach (var group in difference.Where(d => d.Value != 0).GroupBy(d => (d.Key.Table, d.Key.Param)))
        {
            var removed = group.Where(d => d.Value > 0).SelectMany(d => Enumerable.Repeat(d.Key, d.Value)).ToList();
            var added = group.Where(d => d.Value < 0).SelectMany(d => Enumerable.Repeat(d.Key, -d.Value)).ToList();
            var table = group.Key.Table;
            for (var i = 0; i < Math.Max(removed.Count, added.Count); i++)
            {
                problem(i < removed.Count && i < added.Count
                    ? $"index row changed: {table} of {what} holds ({added[i].Shown}) where its sealed version gives ({removed[i].Shown})."
                    : i < added.Count
                        ? $"index row added: {table} of {what} holds a row ({added[i].Shown}) that its sealed version does not give."
                        : $"index row removed: {table} of {what} lacks the row ({removed[i].Shown}) that its sealed version gives.");
            }
        }

        var compartment = patients.Count switch { 0 => null, 1 => patients[0], _ => "*" };
        Summary("compartment", v.Compartment, compartment);
        Summary("labelled", v.Labelled, index?.Labelled == true ? 1L : 0L);
        Summary("deleted", (int?)v.Deleted, v.ExpectedDeleted);
        Summary("last_updated", (long?)v.LastUpdated, v.VersionLastUpdated);

        void Summary<T>(string column, T actualValue, T expectedValue)
        {
            if (!EqualityComparer<T>.Default.Equals(actualValue, expectedValue))
            {
                problem($"row summary changed: resource.{column} of {what} is {Shown(actualValue)} where its sealed version gives {Shown(expectedValue)}.");
            }
        }
    }

    private static string Shown<T>(T value) => value is null ? "NULL" : Convert.ToString(value, CultureInfo.InvariantCulture)!;
}
