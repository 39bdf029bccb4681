-- Every language (issue 12): the prompt set the request asked for, a shipped
-- locale such as 'de' (the primary language subtag of its BCP 47 tag), kept in
-- the row so whichever node claims the verification plays it.
-- NULL: none was asked for; the dialplan's `locale` plays.
ALTER TABLE verifications ADD COLUMN locale TEXT;
