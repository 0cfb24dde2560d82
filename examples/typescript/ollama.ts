// The Shared Ollama Service through the official `ollama` npm package: the Ollama drop-in API (/api/*).
// Chat, streamed chat and embeddings. Run: npx tsx ollama.ts
import { Ollama } from "ollama";

const url = process.env.SHARED_OLLAMA_URL ?? "http://127.0.0.1:8000";
const model = process.env.SHARED_OLLAMA_MODEL ?? "smollm2:135m";
const embedModel = process.env.SHARED_OLLAMA_EMBED_MODEL ?? "all-minilm";
const project = process.env.SHARED_OLLAMA_PROJECT ?? "examples";

// The project header names your tenant; with auth on, send `Authorization: Bearer <key>` instead.
const client = new Ollama({ host: url, headers: { "X-Shared-Ollama-Project": project } });
const options = { temperature: 0, num_predict: 16 }; // greedy and short

const sea = [{ role: "user", content: "Describe the sea in one sentence." }];
const answer = await client.chat({ model, messages: sea, options });
console.log(`reply: ${answer.message.content}`);
console.log(`tokens: ${answer.eval_count}`);

let chunks = 0;
process.stdout.write("stream: ");
const sky = [{ role: "user", content: "Describe the sky in one sentence." }];
for await (const chunk of await client.chat({ model, messages: sky, options, stream: true })) {
  process.stdout.write(chunk.message.content);
  chunks += 1;
}
console.log(`\nchunks: ${chunks}`);

const { embeddings } = await client.embed({ model: embedModel, input: ["The sky is blue.", "Grass is green."] });
console.log(`embeddings: ${embeddings.length} x ${embeddings[0].length}`);
