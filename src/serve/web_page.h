// The page served at GET /: one self-contained HTML file (no external scripts, styles or fonts) in the spirit of
// LongLoRA's demo.py — attach a text file as the material, ask a question, watch the answer stream, with tokens/s and
// how much of the context the conversation uses. It talks to /v1/chat/completions (stream: true), /tokenize and
// /v1/models; each question is a new turn of one conversation, so the prompt cache makes follow-ups cheap.
#pragma once

namespace ll::serve {

const char* web_page();

}  // namespace ll::serve
