-- migration: research: each researcher's differential-privacy budget and what was spent of it
CREATE TABLE research_budget (researcher text COLLATE "C" PRIMARY KEY, name text NOT NULL, epsilon double precision NOT NULL, granted bigint NOT NULL, granted_by text NOT NULL);
CREATE TABLE research_spend (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, researcher text COLLATE "C" NOT NULL, at bigint NOT NULL, epsilon double precision NOT NULL, query text NOT NULL);
CREATE INDEX research_spend_researcher ON research_spend (researcher);
