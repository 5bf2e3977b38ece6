#!/usr/bin/env python3
"""What the access policy's row filter costs inside SQLite, without HTTP: the count query of a clinician's search
GET /fhir/Observation?patient={id} over every patient of a node, bare and with each part of the care filter (the
compartment check, the V-label check through the rid index or through the labels' partial index), and the filter since
migration 8, which reads the row's own summary (resource.compartment, resource.labelled) first.
Usage: bench/policy-sql.py DB   (a copy of a node's ward.db loaded with the Synthea patients; the index tables are
read, never the sealed data). Prints microseconds per query, two rounds."""
import json, sqlite3, sys, time

db = sqlite3.connect(sys.argv[1])
patients = [r[0] for r in db.execute("SELECT id FROM resource WHERE type = 'Patient' AND deleted = 0")]
allowed = json.dumps(patients)
base = ("SELECT count(*) FROM resource r WHERE +r.type = 'Observation' AND r.deleted = 0 AND r.rid IN "
        "(SELECT rid FROM ix_reference WHERE param = 'patient' AND target_id = :p AND target_type = 'Patient')")
compartment = " AND NOT EXISTS (SELECT 1 FROM ix_compartment c WHERE c.rid = r.rid AND NOT c.patient_id IN (SELECT value FROM json_each(:allowed)))"
labels = (" AND (NOT EXISTS (SELECT 1 FROM ix_token AS t {index} WHERE t.rid = r.rid AND t.param = '_security' AND "
          "((t.system = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality' AND t.code IN ('V')){more})) "
          "OR NOT EXISTS (SELECT 1 FROM ix_compartment c WHERE c.rid = r.rid))")
# A policy where a sensitivity code counts as V (labels.sensitivity.HIV: V) adds a second label system to the check.
hiv = " OR (t.system = 'http://terminology.hl7.org/CodeSystem/v3-ActCode' AND t.code IN ('HIV'))"
# Since migration 8: the row's summary decides, the index tables are probed only for rows in several compartments or with labels.
summary = (" AND (r.compartment IS NULL OR r.compartment IN (SELECT value FROM json_each(:allowed)) OR (r.compartment = '*' AND NOT EXISTS "
           "(SELECT 1 FROM ix_compartment c WHERE c.rid = r.rid AND NOT c.patient_id IN (SELECT value FROM json_each(:allowed)))))"
           " AND (NOT (r.labelled <> 0 AND EXISTS (SELECT 1 FROM ix_token AS t INDEXED BY ix_token_security WHERE t.rid = r.rid AND "
           "t.param = '_security' AND t.system = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality' AND t.code IN ('V'))) OR r.compartment IS NULL)")
variants = {
    "no filter": base,
    "compartment check": base + compartment,
    "V-label check, planner's choice": base + labels.format(index="", more=""),
    "V-label check, partial index": base + labels.format(index="INDEXED BY ix_token_security", more=""),
    "V-label check with HIV as V, planner's choice": base + labels.format(index="", more=hiv),
    "V-label check with HIV as V, partial index": base + labels.format(index="INDEXED BY ix_token_security", more=hiv),
    "care filter with HIV as V, planner's choice (before)": base + compartment + labels.format(index="", more=hiv),
    "care filter with HIV as V, partial index (after)": base + compartment + labels.format(index="INDEXED BY ix_token_security", more=hiv),
    "care filter, former (default policy)": base + compartment + labels.format(index="INDEXED BY ix_token_security", more=""),
    "care filter from the row's summary (default policy)": base + summary,
}
for round in (1, 2):
    for name, sql in variants.items():
        start, n = time.perf_counter(), 0
        for _ in range(3):
            for p in patients:
                db.execute(sql, {"p": p, "allowed": allowed}).fetchone()
                n += 1
        print(f"round {round}: {name}: {(time.perf_counter() - start) / n * 1e6:.0f} us per query")
