// The Shared Ollama Service from Go with the standard library only: a chat and a streamed chat on the Ollama
// drop-in API (POST /api/chat). Run: go run .
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"time"
)

type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model    string         `json:"model"`
	Messages []message      `json:"messages"`
	Stream   bool           `json:"stream"`
	Options  map[string]any `json:"options,omitempty"`
}

// chatResponse is one answer, or one line of a stream (the last has Done set and the counts).
type chatResponse struct {
	Message   message `json:"message"`
	Done      bool    `json:"done"`
	EvalCount int     `json:"eval_count"`
	Error     string  `json:"error"` // a stream that fails after its first line ends with an error line
}

func env(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

var (
	baseURL = strings.TrimRight(env("SHARED_OLLAMA_URL", "http://127.0.0.1:8000"), "/")
	model   = env("SHARED_OLLAMA_MODEL", "smollm2:135m")
	project = env("SHARED_OLLAMA_PROJECT", "examples")
	client  = &http.Client{Timeout: 2 * time.Minute}
)

// post sends a chat request and returns the open response; any status but 200 is an error with the body's message.
func post(req chatRequest) (*http.Response, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	httpReq, err := http.NewRequest(http.MethodPost, baseURL+"/api/chat", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	httpReq.Header.Set("Content-Type", "application/json")
	// The project header names your tenant; with auth on, send "Authorization: Bearer <key>" instead.
	httpReq.Header.Set("X-Shared-Ollama-Project", project)
	resp, err := client.Do(httpReq)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		detail, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		// 429 and 503 carry Retry-After: wait that long before trying again.
		return nil, fmt.Errorf("%s (Retry-After: %q): %s", resp.Status, resp.Header.Get("Retry-After"), detail)
	}
	return resp, nil
}

func main() {
	req := chatRequest{
		Model:    model,
		Messages: []message{{Role: "user", Content: "Describe the sea in one sentence."}},
		Options:  map[string]any{"temperature": 0, "num_predict": 16}, // greedy and short
	}

	resp, err := post(req)
	if err != nil {
		log.Fatal(err)
	}
	var answer chatResponse
	err = json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("reply: %s\ntokens: %d\n", answer.Message.Content, answer.EvalCount)

	req.Messages = []message{{Role: "user", Content: "Describe the sky in one sentence."}}
	req.Stream = true
	resp, err = post(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	fmt.Print("stream: ")
	chunks := 0
	lines := bufio.NewScanner(resp.Body) // NDJSON: one JSON object per line
	for lines.Scan() {
		var chunk chatResponse
		if err := json.Unmarshal(lines.Bytes(), &chunk); err != nil {
			log.Fatal(err)
		}
		if chunk.Error != "" {
			log.Fatalf("\nstream failed: %s", chunk.Error)
		}
		fmt.Print(chunk.Message.Content)
		chunks++
	} // read to the end of the body: the stream is over when the service ends it, after the "done" line
	if err := lines.Err(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\nchunks: %d\n", chunks)
}
