namespace Ward.Core.Privacy;

/// <summary>The information-loss measures the search can minimise (all: lower is better).</summary>
internal enum LossMetric
{
    /// <summary>ARX's "Loss": domain-share loss per attribute, generalisation and suppression weighted equally, geometric mean.</summary>
    Loss,
    /// <summary>Non-uniform entropy (Gionis and Tassa), in bits, summed over attributes and records.</summary>
    Entropy,
    /// <summary>Discernibility (Bayardo and Agrawal): Σ|E|² over classes, plus n for each suppressed record.</summary>
    Dm,
    /// <summary>Average equivalence class size (LeFevre et al.) of the released records.</summary>
    Aecs,
    /// <summary>Height of the transformation: the sum of the levels.</summary>
    Height,
    /// <summary>Loss of precision (Sweeney): the mean of level/height over attributes and records, 1 for a suppressed record.</summary>
    Precision,
}

/// <summary>What a release must satisfy: k-anonymity, optionally distinct l-diversity and t-closeness (equal distance) of one sensitive column.</summary>
internal sealed record PrivacyModel(int K, double SuppressionLimit, int L = 1, double? T = null)
{
    public bool NeedsSensitive => L > 1 || T is not null;
}

/// <summary>The evaluation of one transformation (a node of the generalisation lattice).</summary>
internal sealed record NodeResult(int[] Levels, bool Anonymous, double Value, int Suppressed, int[] ClassSizes);

/// <summary>
/// Optimal full-domain generalisation with record suppression under k-anonymity, distinct l-diversity and t-closeness
/// (ADR 0006): every node of the lattice is decided from class tables rolled up layer by layer (<see cref="RollUp"/>),
/// which gives the exact optimum; <see cref="Greedy"/> is the heuristic for lattices too large for that.
/// <see cref="Evaluate"/> groups one node from scratch (the heuristic's step, and the tests' independent reference).
/// </summary>
internal sealed class Anonymizer
{
    private readonly Hierarchy[] _h;
    private readonly int[][] _tuples;      // distinct QI tuples (leaf codes)
    private readonly int[] _counts;        // records per distinct tuple
    private readonly int[][]? _sensitive;  // [tuple] → sensitive value codes, one per record of the tuple
    private readonly int _sensitiveDomain;
    private readonly double[]? _globalDistribution;
    private readonly int _n;
    private readonly Dictionary<TupleKey, int> _index = [];
    private readonly int[] _shift;  // class keys: each attribute's code in its own bit field, at this shift
    private readonly long[] _mask;  // ... of this width (enough bits for the attribute's domain)

    public Anonymizer(Hierarchy[] hierarchies, IReadOnlyList<int[]> rows, IReadOnlyList<int>? sensitive = null, int sensitiveDomain = 0)
    {
        _h = hierarchies;
        _n = rows.Count;
        var tuples = new List<int[]>();
        var counts = new List<int>();
        var sens = sensitive is null ? null : new List<List<int>>();
        for (var r = 0; r < rows.Count; r++)
        {
            var key = new TupleKey(rows[r]);
            if (!_index.TryGetValue(key, out var t))
            {
                _index[key] = t = tuples.Count;
                tuples.Add(rows[r]);
                counts.Add(0);
                sens?.Add([]);
            }
            counts[t]++;
            sens?[t].Add(sensitive![r]);
        }
        _tuples = [.. tuples];
        _counts = [.. counts];
        _sensitive = sens?.Select(s => s.ToArray()).ToArray();
        _sensitiveDomain = sensitiveDomain;
        _marginalLoss = new(() => [.. _h.Select((h, q) => Enumerable.Range(0, h.Height).Select(level => MarginalLoss(q, level)).ToArray())]);
        _generalisedCounts = new(() => [.. _h.Select((h, q) => Enumerable.Range(0, h.Height).Select(level =>
        {
            var counts = new double[h.Values[level].Length];
            for (var t = 0; t < _tuples.Length; t++)
            {
                counts[h.Map[level][_tuples[t][q]]] += _counts[t];
            }
            return counts;
        }).ToArray())]);
        _originalBits = new(() => [.. _generalisedCounts.Value.Select(levels => -levels[0].Sum(c => c > 0 ? c * Math.Log2(c) : 0d))]);
        _marginalEntropy = new(() => [.. _h.Select((h, q) => Enumerable.Range(0, h.Height)
            .Select(level => _originalBits.Value[q] + _generalisedCounts.Value[q][level].Sum(c => c > 0 ? c * Math.Log2(c) : 0d)).ToArray())]);
        _shift = new int[_h.Length];
        _mask = new long[_h.Length];
        var bits = 0;
        for (var q = 0; q < _h.Length; q++)
        {
            var width = Math.Max(1, 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)(_h[q].DomainSize - 1)));
            _shift[q] = bits;
            _mask[q] = (1L << width) - 1;
            bits += width;
        }
        if (bits > 63)
        {
            throw new PrivacyException($"The quasi-identifiers have too many distinct values together ({bits} bits of combinations; at most 63): use fewer columns or coarser hierarchies.");
        }
        if (sensitive is not null)
        {
            _globalDistribution = new double[sensitiveDomain];
            foreach (var s in sensitive)
            {
                _globalDistribution[s] += 1d / _n;
            }
        }
    }

    /// <summary>All nodes of the lattice, in mixed-radix order.</summary>
    public IEnumerable<int[]> Lattice()
    {
        var levels = new int[_h.Length];
        while (true)
        {
            yield return (int[])levels.Clone();
            var q = 0;
            while (q < levels.Length && ++levels[q] == _h[q].Height)
            {
                levels[q++] = 0;
            }
            if (q == levels.Length)
            {
                yield break;
            }
        }
    }

    public long LatticeSize => _h.Aggregate(1L, (a, h) => a * h.Height);

    /// <summary>Lattices up to this many transformations are searched exhaustively; larger ones by <see cref="Greedy"/>.</summary>
    public const long ExhaustiveLimit = 2_000_000;

    /// <summary>
    /// Finds the transformation with the least information loss that satisfies the model (null when none does), and
    /// whether it is the proven optimum (the whole lattice decided) or the heuristic's answer for a lattice too large.
    /// </summary>
    public (NodeResult? Best, int Evaluated, bool Optimal) Search(PrivacyModel model, LossMetric metric)
    {
        if (LatticeSize > ExhaustiveLimit)
        {
            var (greedy, steps) = Greedy(model, metric);
            return (greedy, steps, false);
        }
        var (best, evaluated) = Optimum(model, metric);
        return (best, evaluated, true);
    }

    /// <summary>
    /// The heuristic for lattices too large to decide exhaustively: start from the most general transformation and, while
    /// some direct specialisation still satisfies the model, move to the one with the least loss. It ends on a minimal
    /// satisfying transformation (no single attribute can be made more precise), not necessarily the optimum.
    /// </summary>
    public (NodeResult? Best, int Evaluated) Greedy(PrivacyModel model, LossMetric metric)
    {
        RequireSensitive(model);
        var current = Evaluate([.. _h.Select(h => h.Height - 1)], model, metric);
        var evaluated = 1;
        if (!current.Anonymous)
        {
            return (null, evaluated);
        }
        while (true)
        {
            NodeResult? next = null;
            foreach (var p in Predecessors(current.Levels))
            {
                var candidate = Evaluate(p, model, metric);
                evaluated++;
                if (candidate.Anonymous && (next is null || candidate.Value < next.Value))
                {
                    next = candidate;
                }
            }
            if (next is null)
            {
                return (current, evaluated);
            }
            current = next;
        }
    }

    /// <summary>Finds the transformation with the least information loss that satisfies the model; null when none does.</summary>
    public (NodeResult? Best, int Evaluated) Optimum(PrivacyModel model, LossMetric metric)
    {
        RequireSensitive(model);
        return (RollUp(model, metric), checked((int)LatticeSize));
    }

    private void RequireSensitive(PrivacyModel model)
    {
        if (_globalDistribution is null && model.NeedsSensitive)
        {
            throw new PrivacyException("l-diversity and t-closeness need a sensitive column.");
        }
    }

    /// <summary>
    /// Evaluates every node of the lattice, layer by layer (by height), each from the equivalence classes of one of its
    /// direct specialisations: a class table is rolled up one level of one attribute instead of grouping the records
    /// again, so that a node costs as much as its predecessor has classes (ARX's roll-up). Class keys pack the codes of
    /// all attributes in fixed bit fields, so a roll-up rewrites one field of each key.
    /// With l-diversity or t-closeness, each class also carries the histogram of its sensitive values. The nodes of a
    /// layer are evaluated in parallel.
    /// </summary>
    private NodeResult? RollUp(PrivacyModel model, LossMetric metric)
    {
        var limit = Math.Floor(model.SuppressionLimit * _n + 1e-9);
        var exactBound = model.SuppressionLimit == 0 && metric is LossMetric.Loss or LossMetric.Height or LossMetric.Precision or LossMetric.Entropy;
        var bounds = exactBound ? Lattice().ToDictionary(NodeIndex, l => LowerBound(l, metric)) : null;
        (int[] Levels, double Value, int Suppressed, ClassTable? Table)? best = null;
        var gate = new Lock();
        // A null table marks a node known to pass because a specialisation passes (monotonicity): when the bound is the
        // loss, such a node needs no grouping at all, and neither do its generalisations.
        Dictionary<long, ClassTable?> previous = [];
        foreach (var layer in Lattice().GroupBy(l => l.Sum()).OrderBy(g => g.Key))
        {
            var current = new System.Collections.Concurrent.ConcurrentDictionary<long, ClassTable?>();
            Parallel.ForEach(layer, levels =>
            {
                var q = Array.FindIndex(levels, l => l > 0);
                if (bounds is not null && Predecessors(levels).Any(p => previous[NodeIndex(p)] is null))
                {
                    current[NodeIndex(levels)] = null;
                    Consider(levels, bounds[NodeIndex(levels)], 0, null);
                    return;
                }
                ClassTable table;
                if (q < 0)
                {
                    table = Group(levels);
                }
                else
                {
                    // Roll up from the specialisation with the fewest classes.
                    var (from, source) = Predecessors(levels).Select(p => (p, previous[NodeIndex(p)]!)).MinBy(x => x.Item2.Keys.Length);
                    q = Enumerable.Range(0, levels.Length).First(i => levels[i] != from[i]);
                    table = source.RollUp(_h[q].Up[from[q]], _shift[q], _mask[q]);
                }
                var kept = new bool[table.Keys.Length];
                var suppressed = 0;
                for (var i = 0; i < kept.Length; i++)
                {
                    kept[i] = Released(table, i, model);
                    suppressed += kept[i] ? 0 : table.Counts[i];
                }
                var passes = suppressed <= limit;
                current[NodeIndex(levels)] = passes && bounds is not null ? null : table;
                if (passes)
                {
                    Consider(levels, bounds?[NodeIndex(levels)] ?? Measure(levels, table, kept, suppressed, metric), suppressed, table);
                }
            });
            previous = new Dictionary<long, ClassTable?>(current);
        }
        if (best is not { } found)
        {
            return null;
        }
        // An optimum decided without grouping is grouped once, for its class sizes.
        var table = found.Table ?? Group(found.Levels);
        return new NodeResult(found.Levels, true, found.Value, found.Suppressed, [.. Enumerable.Range(0, table.Keys.Length).Where(i => Released(table, i, model)).Select(i => table.Counts[i])]);

        void Consider(int[] levels, double value, int suppressed, ClassTable? table)
        {
            lock (gate)
            {
                // Ties go to the lower transformation, then to the first in lattice order, whatever the thread timing.
                if (best is not { } b || value < b.Value || (value == b.Value && levels.Sum() == b.Levels.Sum() && NodeIndex(levels) < NodeIndex(b.Levels)))
                {
                    best = (levels, value, suppressed, table);
                }
            }
        }
    }

    private static IEnumerable<int[]> Predecessors(int[] levels)
    {
        for (var q = 0; q < levels.Length; q++)
        {
            if (levels[q] > 0)
            {
                var p = (int[])levels.Clone();
                p[q]--;
                yield return p;
            }
        }
    }

    /// <summary>The class table of a node, grouped from the distinct tuples.</summary>
    private ClassTable Group(int[] levels)
    {
        var keys = new long[_tuples.Length];
        for (var t = 0; t < _tuples.Length; t++)
        {
            for (var a = 0; a < _h.Length; a++)
            {
                keys[t] |= (long)_h[a].Map[levels[a]][_tuples[t][a]] << _shift[a];
            }
        }
        int[]? histograms = null;
        if (_sensitive is not null)
        {
            histograms = new int[_tuples.Length * _sensitiveDomain];
            for (var t = 0; t < _tuples.Length; t++)
            {
                foreach (var v in _sensitive[t])
                {
                    histograms[t * _sensitiveDomain + v]++;
                }
            }
        }
        return ClassTable.Of(keys, _counts, histograms, _sensitiveDomain);
    }

    /// <summary>Whether class <paramref name="i"/> of a table is released: at least k records, and l-diverse and t-close when asked.</summary>
    private bool Released(ClassTable table, int i, PrivacyModel model) =>
        table.Counts[i] >= model.K && (!model.NeedsSensitive || Diverse(table.Histogram(i), table.Counts[i], model));

    private long NodeIndex(int[] levels)
    {
        long index = 0;
        for (var q = 0; q < levels.Length; q++)
        {
            index = index * _h[q].Height + levels[q];
        }
        return index;
    }

    /// <summary>
    /// A node's equivalence classes: the codes of all attributes packed in fixed bit fields, with their record counts
    /// and, when the model looks at a sensitive column, the histogram of its values (<c>D</c> counts per class).
    /// </summary>
    private sealed record ClassTable(long[] Keys, int[] Counts, int[]? Histograms, int D)
    {
        [ThreadStatic]
        private static long[]? _slotKeys;

        [ThreadStatic]
        private static int[]? _slotCounts;

        [ThreadStatic]
        private static int[]? _slotHistograms;

        [ThreadStatic]
        private static int[]? _usedSlots;

        public ReadOnlySpan<int> Histogram(int i) => Histograms.AsSpan(i * D, D);

        /// <summary>Merges equal keys, summing their counts (and histograms).</summary>
        public static ClassTable Of(long[] keys, int[] counts, int[]? histograms, int d) => Merge(keys.Length, keys, counts, histograms, d, 0, 0, null);

        /// <summary>The classes after generalising one attribute (the bit field at <paramref name="shift"/>) one level up.</summary>
        public ClassTable RollUp(int[] up, int shift, long mask) => Merge(Keys.Length, Keys, Counts, Histograms, D, shift, mask, up);

        /// <summary>
        /// The search's hot loop: rewrites each key's field at <paramref name="shift"/> through <paramref name="up"/> (when
        /// given) and merges equal keys by open addressing in per-thread buffers.
        /// </summary>
        private static ClassTable Merge(int length, long[] keys, int[] counts, int[]? histograms, int d, int shift, long mask, int[]? up)
        {
            var capacity = (int)System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, length * 2));
            // The buffers are left all zero after each use (only the slots used are reset), so no call clears them whole.
            if (_slotKeys is null || _slotKeys.Length < capacity)
            {
                _slotKeys = new long[capacity];
                _slotCounts = new int[capacity];
                _usedSlots = new int[capacity];
            }
            if (histograms is not null && (_slotHistograms is null || _slotHistograms.Length < _slotKeys.Length * d))
            {
                _slotHistograms = new int[_slotKeys.Length * d];
            }
            var slotKeys = _slotKeys;
            var slotCounts = _slotCounts!;
            var used = _usedSlots!;
            var slotHistograms = histograms is null ? null : _slotHistograms!;
            var slotMask = capacity - 1;
            var distinct = 0;
            for (var i = 0; i < length; i++)
            {
                var key = keys[i];
                if (up is not null)
                {
                    var code = (int)((key >> shift) & mask);
                    key = (key & ~(mask << shift)) | ((long)up[code] << shift);
                }
                var slot = (int)((ulong)(key * unchecked((long)0x9E3779B97F4A7C15)) >> 32) & slotMask;
                while (slotCounts[slot] != 0 && slotKeys[slot] != key)
                {
                    slot = (slot + 1) & slotMask;
                }
                if (slotCounts[slot] == 0)
                {
                    slotKeys[slot] = key;
                    used[distinct++] = slot;
                }
                slotCounts[slot] += counts[i];
                if (slotHistograms is not null)
                {
                    for (var s = 0; s < d; s++)
                    {
                        slotHistograms[slot * d + s] += histograms![i * d + s];
                    }
                }
            }
            var outKeys = new long[distinct];
            var outCounts = new int[distinct];
            var outHistograms = slotHistograms is null ? null : new int[distinct * d];
            for (var j = 0; j < distinct; j++)
            {
                var slot = used[j];
                outKeys[j] = slotKeys[slot];
                outCounts[j] = slotCounts[slot];
                slotCounts[slot] = 0;
                if (outHistograms is not null)
                {
                    Array.Copy(slotHistograms!, slot * d, outHistograms, j * d, d);
                    Array.Clear(slotHistograms!, slot * d, d);
                }
            }
            return new ClassTable(outKeys, outCounts, outHistograms, d);
        }

        public int Code(int i, int shift, long mask) => (int)((Keys[i] >> shift) & mask);
    }

    /// <summary>A metric from a node's class table and which of its classes are released (the others are suppressed).</summary>
    private double Measure(int[] levels, ClassTable table, bool[] kept, int suppressed, LossMetric metric)
    {
        switch (metric)
        {
            case LossMetric.Loss:
            {
                var sums = new double[_h.Length];
                for (var i = 0; i < table.Keys.Length; i++)
                {
                    var count = table.Counts[i];
                    for (var q = 0; q < _h.Length; q++)
                    {
                        sums[q] += !kept[i] ? count : count * _h[q].Shares[levels[q]][table.Code(i, _shift[q], _mask[q])];
                    }
                }
                return Aggregate([.. sums.Select((sum, q) => Normalise(sum, q))]);
            }
            case LossMetric.Entropy:
            {
                // Σ over records of log2(|generalised value|) − log2(|original value|), a suppressed record's value being '*' (n records).
                var bits = _originalBits.Value.Sum() + suppressed * Math.Log2(_n) * _h.Length;
                var counts = _generalisedCounts.Value;
                for (var i = 0; i < table.Keys.Length; i++)
                {
                    if (kept[i])
                    {
                        for (var q = 0; q < _h.Length; q++)
                        {
                            bits += table.Counts[i] * Math.Log2(counts[q][levels[q]][table.Code(i, _shift[q], _mask[q])]);
                        }
                    }
                }
                return bits;
            }
            case LossMetric.Dm:
                return Enumerable.Range(0, kept.Length).Where(i => kept[i]).Sum(i => (double)table.Counts[i] * table.Counts[i]) + (double)suppressed * _n;
            case LossMetric.Aecs:
            {
                var classes = kept.Count(x => x);
                return classes == 0 ? _n : (double)(_n - suppressed) / classes;
            }
            case LossMetric.Height:
                return levels.Sum();
            case LossMetric.Precision:
                return ((_n - suppressed) * PrecisionLoss(levels) + suppressed) / _n;
            default:
                throw new ArgumentOutOfRangeException(nameof(metric));
        }
    }

    /// <summary>The mean over attributes of level / highest level (an attribute without generalisation counts 0).</summary>
    private double PrecisionLoss(int[] levels) => Enumerable.Range(0, _h.Length).Average(q => _h[q].Height == 1 ? 0d : (double)levels[q] / (_h[q].Height - 1));

    /// <summary>The loss a node would have without suppression (suppression never lowers it): computable without grouping, except for dm and aecs (0).</summary>
    private double LowerBound(int[] levels, LossMetric metric) => metric switch
    {
        LossMetric.Loss => Aggregate([.. levels.Select((level, q) => _marginalLoss.Value[q][level])]),
        LossMetric.Entropy => levels.Select((level, q) => _marginalEntropy.Value[q][level]).Sum(),
        LossMetric.Height => levels.Sum(),
        LossMetric.Precision => PrecisionLoss(levels),
        _ => 0d,
    };

    /// <summary>[attribute][level] → the attribute's normalised loss at that level without suppression.</summary>
    private readonly Lazy<double[][]> _marginalLoss;

    /// <summary>[attribute][level] → the attribute's non-uniform entropy at that level without suppression.</summary>
    private readonly Lazy<double[][]> _marginalEntropy;

    /// <summary>[attribute][level][code] → the number of records whose value generalises to that code.</summary>
    private readonly Lazy<double[][][]> _generalisedCounts;

    /// <summary>[attribute] → −Σ over records of log2(|records sharing the original value|), the part of the entropy no transformation changes.</summary>
    private readonly Lazy<double[]> _originalBits;

    private double MarginalLoss(int q, int level)
    {
        var h = _h[q];
        var sum = 0d;
        for (var t = 0; t < _tuples.Length; t++)
        {
            sum += _counts[t] * h.Shares[level][h.Map[level][_tuples[t][q]]];
        }
        return Normalise(sum, q);
    }

    /// <summary>
    /// ARX's normalisation of one attribute's loss: 0 for the original values, 1 when every value is '*', truncated to
    /// 10 decimal places as ARX does (which is what makes its published figures reproducible to the last digit).
    /// </summary>
    private double Normalise(double aggregate, int q)
    {
        var min = (double)_n / _h[q].DomainSize;
        var result = (aggregate - min) / (_n - min);
        return result >= 0d ? Math.Floor(result * 1e10) / 1e10 : 0d;
    }

    /// <summary>ARX's geometric mean: Π ((v + 1) · w)^(1/n) − 1, with weights 1, multiplied in attribute order.</summary>
    private static double Aggregate(double[] values)
    {
        var result = 1d;
        foreach (var v in values)
        {
            result *= Math.Pow(v + 1d, 1d / values.Length);
        }
        return result - 1d;
    }

    /// <summary>
    /// Non-uniform entropy of one attribute at a level, counted record by record (the reference for the class-table
    /// formula): Σ log2(|records sharing the generalised value| / |records sharing the original value|), a suppressed
    /// record counting as '*', shared by all n.
    /// </summary>
    private double Entropy(int q, int level, List<EquivalenceClass> classes)
    {
        var h = _h[q];
        var original = new double[h.DomainSize];
        var generalised = new double[h.Values[level].Length];
        for (var t = 0; t < _tuples.Length; t++)
        {
            original[_tuples[t][q]] += _counts[t];
            generalised[h.Map[level][_tuples[t][q]]] += _counts[t];
        }
        var sum = 0d;
        foreach (var c in classes)
        {
            foreach (var t in c.Tuples)
            {
                var leaf = _tuples[t][q];
                sum += _counts[t] * Math.Log2((c.Suppressed ? _n : generalised[h.Map[level][leaf]]) / original[leaf]);
            }
        }
        return sum;
    }

    /// <summary>Groups the data under a transformation: the classes (generalised codes, records, tuples) in first-seen order.</summary>
    public List<EquivalenceClass> Classes(int[] levels)
    {
        var classes = new Dictionary<long, EquivalenceClass>();
        var list = new List<EquivalenceClass>();
        for (var t = 0; t < _tuples.Length; t++)
        {
            long key = 0;
            for (var q = 0; q < _h.Length; q++)
            {
                key = key * _h[q].Values[levels[q]].Length + _h[q].Map[levels[q]][_tuples[t][q]];
            }
            if (!classes.TryGetValue(key, out var c))
            {
                classes[key] = c = new EquivalenceClass(t);
                list.Add(c);
            }
            c.Count += _counts[t];
            c.Tuples.Add(t);
        }
        return list;
    }

    /// <summary>Groups, decides which classes are suppressed, checks the suppression limit, and measures the loss.</summary>
    public NodeResult Evaluate(int[] levels, PrivacyModel model, LossMetric metric)
    {
        var classes = Release(levels, model);
        var suppressed = classes.Where(c => c.Suppressed).Sum(c => c.Count);
        var anonymous = suppressed <= Math.Floor(model.SuppressionLimit * _n + 1e-9);
        var kept = classes.Where(c => !c.Suppressed).Select(c => c.Count).ToArray();
        return new NodeResult(levels, anonymous, Measure(levels, classes, suppressed, metric), suppressed, kept);
    }

    /// <summary>The classes of a transformation, each marked suppressed when it does not satisfy the model.</summary>
    public List<EquivalenceClass> Release(int[] levels, PrivacyModel model)
    {
        var classes = Classes(levels);
        foreach (var c in classes)
        {
            c.Suppressed = c.Count < model.K || !Diverse(c, model);
        }
        return classes;
    }

    /// <summary>The index of a distinct tuple of leaf codes.</summary>
    public int TupleOf(int[] leaves) => _index[new TupleKey(leaves)];

    private bool Diverse(EquivalenceClass c, PrivacyModel model)
    {
        if (!model.NeedsSensitive)
        {
            return true;
        }
        var histogram = new int[_sensitiveDomain];
        foreach (var t in c.Tuples)
        {
            foreach (var s in _sensitive![t])
            {
                histogram[s]++;
            }
        }
        return Diverse(histogram, c.Count, model);
    }

    private bool Diverse(ReadOnlySpan<int> histogram, int count, PrivacyModel model)
    {
        var distinct = 0;
        foreach (var x in histogram)
        {
            distinct += x > 0 ? 1 : 0;
        }
        if (model.L > 1 && distinct < model.L)
        {
            return false;
        }
        if (model.T is { } tmax)
        {
            // Earth mover's distance with equal ground distance: half the total variation from the global distribution.
            var distance = 0d;
            for (var s = 0; s < _sensitiveDomain; s++)
            {
                distance += Math.Abs((double)histogram[s] / count - _globalDistribution![s]);
            }
            if (distance / 2 > tmax + 1e-12)
            {
                return false;
            }
        }
        return true;
    }

    private double Measure(int[] levels, List<EquivalenceClass> classes, int suppressed, LossMetric metric)
    {
        switch (metric)
        {
            case LossMetric.Loss:
            {
                var values = new double[_h.Length];
                for (var q = 0; q < _h.Length; q++)
                {
                    var sum = 0d;
                    foreach (var c in classes)
                    {
                        sum += c.Suppressed ? c.Count : c.Count * _h[q].Shares[levels[q]][_h[q].Map[levels[q]][_tuples[c.First][q]]];
                    }
                    values[q] = Normalise(sum, q);
                }
                return Aggregate(values);
            }
            case LossMetric.Entropy:
                return Enumerable.Range(0, _h.Length).Sum(q => Entropy(q, levels[q], classes));
            case LossMetric.Dm:
                return classes.Where(c => !c.Suppressed).Sum(c => (double)c.Count * c.Count) + (double)suppressed * _n;
            case LossMetric.Aecs:
            {
                var kept = classes.Count(c => !c.Suppressed);
                return kept == 0 ? _n : (double)(_n - suppressed) / kept;
            }
            case LossMetric.Height:
                return levels.Sum();
            case LossMetric.Precision:
            {
                var sum = 0d;
                foreach (var c in classes)
                {
                    sum += c.Suppressed ? c.Count : c.Count * PrecisionLoss(levels);
                }
                return sum / _n;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(metric));
        }
    }

    internal sealed class EquivalenceClass(int first)
    {
        public int First { get; } = first;
        public int Count { get; set; }
        public bool Suppressed { get; set; }
        public List<int> Tuples { get; } = [];
    }

    private readonly struct TupleKey(int[] codes) : IEquatable<TupleKey>
    {
        private readonly int[] _codes = codes;

        public bool Equals(TupleKey other) => _codes.AsSpan().SequenceEqual(other._codes);

        public override bool Equals(object? obj) => obj is TupleKey k && Equals(k);

        public override int GetHashCode()
        {
            var hash = new HashCode();
            foreach (var c in _codes)
            {
                hash.Add(c);
            }
            return hash.ToHashCode();
        }
    }
}
