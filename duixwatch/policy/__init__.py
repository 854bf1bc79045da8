"""Policies: what a policy is (its schema and match kinds), what it decides (pure
evaluation, plans), and how a decision is carried out (the one policy cycle, the executor,
the audit log, notifications) — written against ports the daemon fills."""
