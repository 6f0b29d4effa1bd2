"""The run folder and what it records: its files (:mod:`~sdcorr.runs.folder`), the typed records of
those files (:mod:`~sdcorr.runs.records`), scoring predictions into tables (:mod:`~sdcorr.runs.scoring`),
what makes two runs the same (:mod:`~sdcorr.runs.fingerprint`), what a run will cost
(:mod:`~sdcorr.runs.plan`) and comparing finished runs (:mod:`~sdcorr.runs.compare`)."""
