"""Images and pages for a person to look at (slices with lesion outlines, reports)."""
