"""An unsealed round's results as tables, Markdown/HTML/JSON and a chart."""
