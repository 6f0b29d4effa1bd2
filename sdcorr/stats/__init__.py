"""Numbers about predictions, with no file access: PCK (:mod:`~sdcorr.stats.pck`), bootstrap intervals
and paired differences (:mod:`~sdcorr.stats.intervals`) and the paper's published figures
(:mod:`~sdcorr.stats.paper`)."""
