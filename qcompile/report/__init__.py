"""Build reports: report.json (the contract other tools read) and report.md (for people)."""
