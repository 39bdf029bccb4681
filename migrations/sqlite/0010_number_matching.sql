-- Number matching (issue 12): the code the callee keys in before `#`. Kept
-- in the row, not hashed, because the creating tenant reads it back in the
-- record and whichever node claims the verification compares the entry with it.
-- NULL: the dialplan's `expect` confirms, as before.
ALTER TABLE verifications ADD COLUMN code TEXT;
