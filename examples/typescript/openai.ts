// The Shared Ollama Service through the official `openai` npm package: the OpenAI drop-in API (/v1/*).
// Chat completion, streamed chat completion and embeddings. Run: npx tsx openai.ts
import OpenAI from "openai";

const url = process.env.SHARED_OLLAMA_URL ?? "http://127.0.0.1:8000";
const model = process.env.SHARED_OLLAMA_MODEL ?? "smollm2:135m";
const embedModel = process.env.SHARED_OLLAMA_EMBED_MODEL ?? "all-minilm";
const project = process.env.SHARED_OLLAMA_PROJECT ?? "examples";

// The project header names your tenant while auth is off; the SDK still wants a key then (any string does).
// With auth on, pass your key as apiKey.
const client = new OpenAI({
  baseURL: `${url}/v1`,
  apiKey: "unused",
  defaultHeaders: { "X-Shared-Ollama-Project": project },
});
// temperature 0: greedy; max_tokens: a short answer.
const sea: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "Describe the sea in one sentence." }];
const answer = await client.chat.completions.create({ model, messages: sea, temperature: 0, max_tokens: 16 });
console.log(`reply: ${answer.choices[0].message.content}`);
console.log(`tokens: ${answer.usage?.completion_tokens}`);

let chunks = 0;
process.stdout.write("stream: ");
const sky: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "Describe the sky in one sentence." }];
const stream = await client.chat.completions.create({
  model,
  messages: sky,
  temperature: 0,
  max_tokens: 16,
  stream: true,
});
for await (const chunk of stream) {
  const text = chunk.choices[0]?.delta?.content;
  if (text) {
    process.stdout.write(text);
    chunks += 1;
  }
}
console.log(`\nchunks: ${chunks}`);

const { data } = await client.embeddings.create({ model: embedModel, input: ["The sky is blue.", "Grass is green."] });
console.log(`embeddings: ${data.length} x ${data[0].embedding.length}`);
