"""Package data: label tables, the train config defaults and schema, systems, references."""
