-- A module of the operator's own, found by require in the scripts directory.
return { answer = 42 }
