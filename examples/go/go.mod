module example.com/shared-ollama-example

go 1.19
