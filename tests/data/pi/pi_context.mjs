// Load a session file with pi's own code and print the context pi would send the model, as JSON:
// {"id", "leafId", "entries", "messages": convertToLlm(buildSessionContext().messages)}.
// Usage: node pi_context.mjs PI_PREFIX SESSION.jsonl   (PI_PREFIX: where `npm install --prefix` put pi)
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [prefix, file] = process.argv.slice(2);
const root = join(prefix, "node_modules/@mariozechner/pi-coding-agent/dist");
const { SessionManager } = await import(pathToFileURL(join(root, "index.js")).href);
const { convertToLlm } = await import(pathToFileURL(join(root, "core/messages.js")).href);
const manager = SessionManager.open(file, join(prefix, "unused-session-dir"));
const context = manager.buildSessionContext();
process.stdout.write(JSON.stringify({
  id: manager.getSessionId(),
  leafId: manager.getLeafId(),
  entries: manager.getEntries().length,
  messages: convertToLlm(context.messages),
}));
