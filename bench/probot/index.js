// The Probot side of `scripts/bench-ingest`: a Probot 14 app doing what the bot's ingest does
// for a repository no Project manages. Probot's own server verifies `X-Hub-Signature-256`
// (@octokit/webhooks), parses the JSON body and dispatches the event; the handler does
// nothing. Started by the script with APP_ID, PRIVATE_KEY_PATH, WEBHOOK_SECRET, HOST, PORT,
// NODE_ENV=production (JSON logs, like a deployed app) and Probot's default log level.
import { run } from "probot";

const app = (probot) => {
  probot.on(["pull_request.opened", "issues.labeled"], async () => {});
};

await run(app);
