-- A tenant's browser allow-list: the private addresses and host names its browser sessions may
-- reach (CIDRs, IP addresses, host names, `*.` wildcards), as a JSON array of strings. Existing
-- tenants get the empty list: nothing beyond the public internet.

ALTER TABLE tenants ADD COLUMN browser_allow TEXT NOT NULL DEFAULT '[]';
