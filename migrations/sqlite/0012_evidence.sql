-- Evidence per key (issue 12): one JSON list per attempt, an entry per key
-- accepted with what its path measured (levels, frequency errors, twist and
-- margin in-band; payload type, volume and end for RFC 4733; content type
-- for SIP INFO). NULL for attempts without keys and for those written before.
ALTER TABLE attempts ADD COLUMN evidence TEXT;
