using System.Globalization;
using Ward.Core.Privacy;

namespace Ward.Core.Storage;

/// <summary>The differential-privacy ledger: each researcher's ε budget (granted by the data protection officer) and every charge against it.</summary>
internal sealed partial class StoreSession
{
    /// <summary>Sets a researcher's total budget (what was spent stays spent).</summary>
    public void GrantEpsilon(string researcher, string name, double epsilon, string grantedBy, long now)
    {
        EnsureWriter();
        Cmd("DELETE FROM research_budget WHERE researcher = @r", ("@r", researcher)).ExecuteNonQuery();
        Cmd("INSERT INTO research_budget (researcher, name, epsilon, granted, granted_by) VALUES (@r, @n, @e, @g, @b)",
            ("@r", researcher), ("@n", name), ("@e", epsilon), ("@g", now), ("@b", grantedBy)).ExecuteNonQuery();
    }

    /// <summary>A researcher's budget and what was spent of it (budget 0 when none was granted).</summary>
    public (double Budget, double Spent) EpsilonOf(string researcher)
    {
        var budget = Cmd("SELECT epsilon FROM research_budget WHERE researcher = @r", ("@r", researcher)).ExecuteScalar();
        var spent = Cmd("SELECT coalesce(sum(epsilon), 0) FROM research_spend WHERE researcher = @r", ("@r", researcher)).ExecuteScalar();
        return (budget is null or DBNull ? 0 : Convert.ToDouble(budget, CultureInfo.InvariantCulture), Convert.ToDouble(spent, CultureInfo.InvariantCulture));
    }

    /// <summary>Charges ε for a question; refused (nothing charged) when the researcher's budget cannot cover it. Returns the new total spent and the budget.</summary>
    public (double Spent, double Budget) SpendEpsilon(string researcher, double epsilon, string query, long now)
    {
        EnsureWriter();
        var (budget, spent) = EpsilonOf(researcher);
        // A little slack for the rounding of sums of decimal fractions (0.1 + 0.2 > 0.3).
        if (spent + epsilon > budget + 1e-9)
        {
            throw new BudgetException(budget == 0
                ? "No differential-privacy budget was granted to this researcher: the data protection officer grants one (ward research budget)."
                : $"This question needs ε = {epsilon.ToString("R", CultureInfo.InvariantCulture)}; {Math.Max(0, budget - spent).ToString("0.######", CultureInfo.InvariantCulture)} of the budget of {budget.ToString("R", CultureInfo.InvariantCulture)} remains. Nothing was answered or charged.");
        }
        Cmd("INSERT INTO research_spend (researcher, at, epsilon, query) VALUES (@r, @a, @e, @q)", ("@r", researcher), ("@a", now), ("@e", epsilon), ("@q", query)).ExecuteNonQuery();
        return (spent + epsilon, budget);
    }

    /// <summary>Every researcher with a budget: name, budget, spent, questions asked.</summary>
    public List<(string Researcher, string Name, double Budget, double Spent, int Questions)> EpsilonLedger()
    {
        using var reader = Cmd("SELECT b.researcher, b.name, b.epsilon, coalesce(sum(s.epsilon), 0), count(s.id) FROM research_budget b LEFT JOIN research_spend s ON s.researcher = b.researcher GROUP BY b.researcher, b.name, b.epsilon ORDER BY b.name").ExecuteReader();
        var list = new List<(string, string, double, double, int)>();
        while (reader.Read())
        {
            list.Add((reader.GetString(0), reader.GetString(1), reader.GetDouble(2), Convert.ToDouble(reader.GetValue(3), CultureInfo.InvariantCulture), Convert.ToInt32(reader.GetValue(4), CultureInfo.InvariantCulture)));
        }
        return list;
    }
}
