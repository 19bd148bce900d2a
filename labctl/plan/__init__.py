"""Memory arithmetic and the planner (KV cache, context, offload, llama-server flags), shape twins and
llama.cpp's own measurements."""
