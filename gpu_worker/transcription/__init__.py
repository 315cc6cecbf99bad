"""Step 4: a recording to timed segments with the language's model, window by window, with
progress; and the text forms of those segments that step 5 writes."""
