// An agency's system talking to Re-think with the official NATS client for Node.js only.
//
// It submits a request with one check still to do, confirms the checks, re-sends the request
// (idempotent: same case, nothing new), then collects the kept receipts from its own durable
// consumer, as a system that was offline when the replies came would. Prints a JSON summary
// and exits non-zero if anything is not as the guide (docs/agencies.md) says.
//
// Configuration (environment):
//   NATS_URL        e.g. nats://127.0.0.1:4222
//   NATS_USER       your agency's user, e.g. police (also the agency in every subject)
//   NATS_PASS       its password
//   RETHINK_PREFIX  subject prefix, default "rethink"
//   RECEIPT_STREAM  default "RETHINK_RECEIPTS"
//   REQUEST_ID      your own id for the request, default a fresh one

import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { createHash, randomUUID } from "node:crypto";

const env = process.env;
const agency = env.NATS_USER;
const prefix = env.RETHINK_PREFIX ?? "rethink";
const receiptStream = env.RECEIPT_STREAM ?? "RETHINK_RECEIPTS";
const requestId = env.REQUEST_ID ?? `NODE-${randomUUID()}`;

function check(condition, what, value) {
  if (!condition) {
    throw new Error(`${what}: ${JSON.stringify(value)}`);
  }
}

async function ask(nc, command, payload) {
  const body = JSON.stringify(payload);
  const reply = await nc.request(`${prefix}.intake.${agency}.${command}`, body, { timeout: 10_000 });
  const receipt = reply.json();
  check(receipt.body_sha256 === createHash("sha256").update(body).digest("hex"), "receipt matches what was sent", receipt);
  return receipt;
}

const yes = { answer: true };
const request = {
  schema_version: 1,
  request_id: requestId,
  agency,
  immediate_risk: false,
  case_reference: "POL-CR-2026-0042",
  requester: { name: "Pat Officer", role: "Detective Sergeant", agency: "Police", email: "pat.officer@police.example.org" },
  agencies: ["Police", "Children's Social Care"],
  reason: "disagreement",
  description: "Police and social care disagree on whether the plan addresses the risk at home.",
  invitees: [{ name: "Alex Social", agency: "Children's Social Care", email: "sw@council.example.org" }],
  checks: { raised_with_network: yes, conversation_had: { answer: false, note: "Meeting booked" }, hips_policy_considered: yes },
};

// Replies may come only to this agency's own inbox prefix: the server refuses any other.
const nc = await connect({ servers: env.NATS_URL, user: agency, pass: env.NATS_PASS, inboxPrefix: `_INBOX_${agency}` });
try {
  const submitted = await ask(nc, "submit", request);
  check(submitted.status === "accepted" && submitted.checks === "incomplete", "submit accepted, checks incomplete", submitted);
  check(submitted.missing_checks.includes("conversation_had"), "missing check named", submitted);

  const refused = await ask(nc, "confirm_checks", { case_id: submitted.case_id, checks: request.checks });
  check(refused.status === "rejected" && refused.reasons[0].code === "checks_incomplete", "still-missing check refused", refused);

  const allYes = { raised_with_network: yes, conversation_had: yes, hips_policy_considered: yes };
  const confirmed = await ask(nc, "confirm_checks", { case_id: submitted.case_id, checks: allYes });
  check(confirmed.status === "accepted" && confirmed.events[0] === "ChecksConfirmed", "checks confirmed", confirmed);

  const again = await ask(nc, "submit", request);
  check(again.duplicate === true && again.case_id === submitted.case_id, "re-send is the same case", again);
  check(JSON.stringify(again.event_ids) === JSON.stringify(submitted.event_ids), "and the same events", again);

  // The durable copies, from this agency's own consumer (Re-think made it; we only pull and ack).
  const sent = new Set([submitted, refused, confirmed, again].map((r) => r.receipt_id));
  const kept = [];
  const consumer = await jetstream(nc).consumers.get(receiptStream, agency);
  for (let round = 0; round < 20 && kept.length < sent.size; round++) {
    const batch = await consumer.fetch({ max_messages: 100, expires: 1000 });
    for await (const m of batch) {
      const receipt = m.json();
      if (sent.has(receipt.receipt_id)) kept.push(receipt);
      m.ack();
    }
  }
  check(kept.length === sent.size, "every receipt kept", kept.map((r) => r.receipt_id));
  check(kept.every((r) => r.agency === agency), "only our own receipts", kept);

  console.log(JSON.stringify({
    case_id: submitted.case_id,
    request_id: requestId,
    statuses: [submitted, refused, confirmed, again].map((r) => r.status),
    kept: kept.map((r) => ({ receipt_id: r.receipt_id, status: r.status, command: r.command })),
  }));
} finally {
  await nc.drain();
}
