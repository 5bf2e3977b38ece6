namespace Ward.Core.Privacy;

/// <summary>
/// A generalisation hierarchy of one column, as ARX writes them: one row per original value, one column per level
/// (level 0 is the value itself, the last level usually <c>*</c>). Values are coded per level as small integers, with
/// each coded value's domain share (the fraction of the original values it covers).
/// </summary>
internal sealed class Hierarchy
{
    private readonly Dictionary<string, int> _leaves;

    private Hierarchy(string column, string[][] rows)
    {
        Column = column;
        Height = rows[0].Length;
        if (rows.Any(r => r.Length != Height))
        {
            throw new PrivacyException($"The hierarchy of '{column}' has rows of different lengths: every row needs one value per level.");
        }
        _leaves = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < rows.Length; i++)
        {
            if (!_leaves.TryAdd(rows[i][0], i))
            {
                throw new PrivacyException($"The hierarchy of '{column}' lists the value '{rows[i][0]}' twice.");
            }
        }
        Map = new int[Height][];
        Up = new int[Height - 1][];
        Values = new string[Height][];
        Shares = new double[Height][];
        for (var level = 0; level < Height; level++)
        {
            var codes = new Dictionary<string, int>(StringComparer.Ordinal);
            var map = new int[rows.Length];
            var leafCounts = new List<int>();
            for (var i = 0; i < rows.Length; i++)
            {
                var value = rows[i][level];
                if (!codes.TryGetValue(value, out var code))
                {
                    codes[value] = code = codes.Count;
                    leafCounts.Add(0);
                }
                map[i] = code;
                leafCounts[code]++;
            }
            Map[level] = map;
            if (level > 0)
            {
                // Each value of the level below must generalise to exactly one value of this level.
                var up = new int[Values[level - 1].Length];
                Array.Fill(up, -1);
                for (var i = 0; i < rows.Length; i++)
                {
                    var from = Map[level - 1][i];
                    if (up[from] >= 0 && up[from] != map[i])
                    {
                        throw new PrivacyException($"The hierarchy of '{column}' is not a tree: '{rows[i][level - 1]}' at level {level - 1} generalises to two values at level {level}.");
                    }
                    up[from] = map[i];
                }
                Up[level - 1] = up;
            }
            Values[level] = [.. codes.OrderBy(c => c.Value).Select(c => c.Key)];
            Shares[level] = [.. leafCounts.Select(c => (double)c / rows.Length)];
        }
    }

    public string Column { get; }

    /// <summary>Number of levels (the highest level is <c>Height - 1</c>).</summary>
    public int Height { get; }

    /// <summary>Number of original values (ARX's domain size).</summary>
    public int DomainSize => _leaves.Count;

    /// <summary>[level][leaf] → the leaf's code at that level.</summary>
    public int[][] Map { get; }

    /// <summary>[level][code] → the code of the value's generalisation at level + 1.</summary>
    public int[][] Up { get; }

    /// <summary>[level][code] → the text of a coded value.</summary>
    public string[][] Values { get; }

    /// <summary>[level][code] → the share of the original domain the value covers.</summary>
    public double[][] Shares { get; }

    public int Leaf(string value, int row) => _leaves.TryGetValue(value, out var leaf)
        ? leaf
        : throw new PrivacyException($"Row {row + 1}: the value '{value}' of '{Column}' is not in its hierarchy.");

    /// <summary>A hierarchy from its rows (one per original value, one column per level).</summary>
    public static Hierarchy Of(string column, string[][] rows) => rows.Length == 0
        ? throw new PrivacyException($"The hierarchy of '{column}' has no values.")
        : new Hierarchy(column, rows);

    /// <summary>Loads <c>&lt;prefix&gt;_hierarchy_&lt;column&gt;.csv</c> from a folder.</summary>
    public static Hierarchy Load(string folder, string column, char separator)
    {
        var files = Directory.Exists(folder) ? Directory.GetFiles(folder, $"*_hierarchy_{column}.csv") : [];
        if (files.Length != 1)
        {
            throw new PrivacyException(files.Length == 0
                ? $"No hierarchy for '{column}' in {folder}: expected a file named <prefix>_hierarchy_{column}.csv."
                : $"Several hierarchies for '{column}' in {folder}: {string.Join(", ", files.Select(Path.GetFileName))}.");
        }
        var rows = Csv.Read(files[0], separator).ToArray();
        if (rows.Length == 0)
        {
            throw new PrivacyException($"The hierarchy {files[0]} is empty.");
        }
        return new Hierarchy(column, rows);
    }
}

/// <summary>A problem with the anonymisation input or settings, explained for the person running it.</summary>
internal sealed class PrivacyException(string message) : Exception(message);
