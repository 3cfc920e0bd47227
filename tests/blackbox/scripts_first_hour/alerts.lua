-- Fixture for test_first_hour.py: alerts of an operator's own, with and without runbooks.
local hk = require "hancock"

hk.alert("CustomNoRunbook", {
  group = "custom",
  expr = "up == 0",
  ["for"] = "1m",
  severity = "warning",
  summary = "Something is down",
  description = "No runbook was written for this one.",
})

hk.alert("CustomWikiRunbook", {
  group = "custom",
  expr = "up == 0",
  ["for"] = "1m",
  severity = "warning",
  summary = "The queue is down",
  description = "Its runbook is a wiki page.",
  runbook_url = "https://wiki.example.com/queue",
})

hk.alert("CustomRepoRunbook", {
  group = "custom",
  expr = "up == 0",
  ["for"] = "1m",
  severity = "warning",
  summary = "The disk is full",
  description = "Its runbook is a file in the operator's repository.",
  runbook_url = "runbooks/disk.md",
})
