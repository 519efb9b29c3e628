"""The audit log: hash chain, signed checkpoints, export and evidence, the audit of
who may do what (identity), and its admin page. The tables stay in the `changes`
app's models (their names are in the database triggers and in every stored
permission); this room holds the code that writes and reads them."""
