"""Media that came with messages: names, the group's inbox, images for the model,
transcription of voice notes, and the per-message step that saves them (issue 19)."""
