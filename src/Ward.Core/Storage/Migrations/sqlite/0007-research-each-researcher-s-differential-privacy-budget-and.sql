-- migration: research: each researcher's differential-privacy budget and what was spent of it
CREATE TABLE research_budget (researcher TEXT PRIMARY KEY, name TEXT NOT NULL, epsilon REAL NOT NULL, granted INTEGER NOT NULL, granted_by TEXT NOT NULL);
CREATE TABLE research_spend (id INTEGER PRIMARY KEY, researcher TEXT NOT NULL, at INTEGER NOT NULL, epsilon REAL NOT NULL, query TEXT NOT NULL);
CREATE INDEX research_spend_researcher ON research_spend (researcher);
