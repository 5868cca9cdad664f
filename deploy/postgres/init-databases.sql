-- A database per service: each service owns its projection and nobody else reads it.
-- Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d);
-- with a managed PostgreSQL, run it yourself as an administrator.
CREATE DATABASE rethink_intake;
CREATE DATABASE rethink_scheduling;
CREATE DATABASE rethink_meeting;
CREATE DATABASE rethink_escalation;
-- The scheduling service's outbox of mail to send: not rebuilt from the log, so back it up.
CREATE DATABASE rethink_outbox;
