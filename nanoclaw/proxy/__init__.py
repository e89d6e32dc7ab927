"""The model proxy: the one door from a sandbox to the model. What a run may ask
(admission), budgets reserved before forwarding (budget), bodies read within limits
(intake), and the server on /ipc/llm.sock (server)."""
