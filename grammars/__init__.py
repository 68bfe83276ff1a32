"""Grammar engines and the grammar library (lark grammars compiled to token masks)."""
